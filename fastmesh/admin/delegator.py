"""`/delegator.json` and the `/delegator` dtab playground (spec §8.4), from fastmesh.naming.

The JSON handler uses the same delegation code as `fastmesh delegate`; the page is a
static form that posts to it, with every router's base dtab pre-filled.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from fastmesh.admin.server import AdminRequest, AdminResponse, AdminServer
from fastmesh.naming import Dtab, Interpreter, ParseError, Path, delegate

if TYPE_CHECKING:
    from fastmesh.linker import Linker


def delegator_json(linker: "Linker", namespace: str | None, path_text: str,
                   dtab_text: str) -> AdminResponse:
    if namespace:
        interpreter = linker.interpreters.get(namespace)
        if interpreter is None:
            return AdminResponse.text(f"Name Interpreter for {namespace} cannot show delegations",
                                      501)
    else:
        interpreter = Interpreter([], [])   # only the /$ built-ins
    try:
        path = Path.read(path_text)
    except ParseError as exc:
        return AdminResponse.text(f"Invalid path: {exc}", 400)
    try:
        dtab = Dtab.read(dtab_text or "")
    except ParseError as exc:
        return AdminResponse.text(f"Invalid dtab: {exc}", 400)
    result = delegate(dtab, path, interpreter)
    body = json.dumps(result.to_delegator_json(), separators=(",", ":")).encode()
    return AdminResponse.json_bytes(body)


def install(admin: AdminServer, linker: "Linker") -> None:

    def handle_json(req: AdminRequest) -> AdminResponse:
        if req.method in ("GET", "HEAD"):
            return delegator_json(linker, req.arg("namespace"), req.arg("path", "") or "",
                                  req.arg("dtab", "") or "")
        if req.method != "POST":
            return AdminResponse(status=405, headers=[("Allow", "GET, POST")])
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return AdminResponse.text(f"unsupported content type: {ctype}", 415)
        try:
            body = json.loads(req.body)
            ns, path, dtab = body["namespace"], body["path"], body["dtab"]
        except (ValueError, KeyError, TypeError):
            return AdminResponse.text(
                f"Malformed delegation request: {req.body.decode('utf-8', 'replace')}", 400)
        return delegator_json(linker, ns, path, dtab)

    def handle_page(req: AdminRequest) -> AdminResponse:
        dtabs = {label: r.dtab.show for label, r in linker.routers.items()}
        return AdminResponse(body=_page(dtabs).encode(), content_type="text/html;charset=UTF-8")

    admin.add("/delegator.json", handle_json, "ui")
    admin.add("/delegator", handle_page, "ui")


def _page(dtabs: dict[str, str]) -> str:
    options = "".join(f'<option value="{html.escape(k)}">{html.escape(k)}</option>' for k in dtabs)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fastmesh delegator</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; max-width: 60em; }}
textarea, input, select {{ font: 13px ui-monospace, monospace; width: 100%; box-sizing: border-box; }}
textarea {{ height: 9em; }}
pre {{ background: #f4f4f4; padding: 1em; overflow: auto; }}
</style></head>
<body>
<h1>Delegator</h1>
<p>How a name delegates through a router's dtab (plus your edits), with that router's namers
and transformers. Same code as <code>fastmesh delegate</code>.</p>
<label>Router <select id="ns">{options}</select></label>
<label>Dtab <textarea id="dtab"></textarea></label>
<label>Path <input id="path" value="/svc/world"></label>
<p><button id="go">Delegate</button></p>
<pre id="out"></pre>
<script>
const dtabs = {json.dumps(dtabs)};
const ns = document.getElementById("ns"), dt = document.getElementById("dtab");
function fill() {{ dt.value = (dtabs[ns.value] || "").split(";").filter(Boolean).join(";\\n") + ";"; }}
ns.addEventListener("change", fill); fill();
document.getElementById("go").addEventListener("click", async () => {{
  const r = await fetch("delegator.json", {{method: "POST",
    headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{namespace: ns.value, dtab: dt.value,
                          path: document.getElementById("path").value}})}});
  const text = await r.text();
  try {{ document.getElementById("out").textContent = JSON.stringify(JSON.parse(text), null, 2); }}
  catch (e) {{ document.getElementById("out").textContent = r.status + " " + text; }}
}});
</script>
</body></html>
"""
