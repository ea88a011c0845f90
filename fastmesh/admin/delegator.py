"""`/delegator.json` and the `/delegator` dtab playground (spec §8.4), from fastmesh.naming.

Role: the admin twin of `fastmesh delegate` (same `delegate` code): how a name resolves
through a dtab and a router's namers and transformers, as linkerd's JSON delegate tree.
Not on the request path.

`GET ?namespace=<router>&path=<path>&dtab=<dtab>` or `POST` JSON `{namespace?, path, dtab}`.
The dtab given is the whole dtab (the router's base is not added). No namespace: only the
`/$` built-ins. 400 `Invalid dtab: ...` / `Invalid path: ...` (the dtab is checked first)
or `Malformed delegation request: <body>`; 405 other methods; 415 a POST that is not
`application/json`; 501 an unknown router, or one whose interpreter cannot show
delegations (a non-delegating transformer such as io.l5d.replace); pending names are
waited out up to 2 s, then 503 `Request timed out.`. The page is a static form that posts
to it, with every router's base dtab pre-filled.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import TYPE_CHECKING

from fastmesh.admin.server import AdminRequest, AdminResponse, AdminServer
from fastmesh.naming import Dtab, Interpreter, ParseError, Path, delegate

if TYPE_CHECKING:
    from fastmesh.linker import Linker

PENDING_TIMEOUT_S = 2.0   # linkerd: `.within(2.seconds)`, then 503 "Request timed out."
PENDING_RECHECK_S = 0.05  # addresses going pending → bound fire no namer listener; re-check


def _interpreter_for(linker: "Linker", namespace: str | None) -> Interpreter | None:
    """The router's interpreter; only the /$ built-ins without a namespace; None → 501."""
    if namespace is None:
        return Interpreter([], [])
    interpreter = linker.interpreters.get(namespace)
    if interpreter is None or not interpreter.delegatable:
        return None
    return interpreter


async def delegator_json(linker: "Linker", namespace: str | None, path_text: str | None,
                         dtab_text: str | None, *,
                         timeout_s: float = PENDING_TIMEOUT_S) -> AdminResponse:
    """linkerd's DelegateApiHandler: the dtab given is the whole dtab (no base added)."""
    interpreter = _interpreter_for(linker, namespace)
    if interpreter is None:
        return AdminResponse.text(f"Name Interpreter for {namespace} cannot show delegations", 501)
    # linkerd checks the dtab before the path
    try:
        dtab = Dtab.read(dtab_text or "")
    except ParseError as exc:
        return AdminResponse.text(f"Invalid dtab: {exc}", 400)
    try:
        path = Path.read(path_text if path_text is not None else "")
    except ParseError as exc:
        return AdminResponse.text(f"Invalid path: {exc}", 400)

    result = delegate(dtab, path, interpreter)
    if result.pending:
        # Wait the pending names out (a namer's first answer, an address still resolving),
        # woken by the namers' listeners and re-checked briefly for address-only changes.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        changed = asyncio.Event()
        handle = interpreter.add_listener(changed.set)
        try:
            while result.pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return AdminResponse.text("Request timed out.", 503)
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, PENDING_RECHECK_S))
                except asyncio.TimeoutError:
                    pass
                result = delegate(dtab, path, interpreter)
        finally:
            handle.close()
    body = json.dumps(result.to_delegator_json(), separators=(",", ":")).encode()
    return AdminResponse.json_bytes(body)


def _post_fields(body: bytes) -> tuple[str | None, str, str] | None:
    """(namespace, path, dtab) from a POST body; None when malformed (path, dtab required)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    ns, path, dtab = data.get("namespace"), data.get("path"), data.get("dtab")
    if not isinstance(path, str) or not isinstance(dtab, str):
        return None
    if ns is not None and not isinstance(ns, str):
        return None
    return ns, path, dtab


def install(admin: AdminServer, linker: "Linker") -> None:

    async def handle_json(req: AdminRequest) -> AdminResponse:
        if req.method in ("GET", "HEAD"):
            return await delegator_json(linker, req.arg("namespace"), req.arg("path"),
                                        req.arg("dtab"))
        if req.method != "POST":
            return AdminResponse(status=405, headers=[("Allow", "GET, POST")])
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return AdminResponse.text(f"unsupported content type: {ctype or '(none)'}", 415)
        fields = _post_fields(req.body)
        if fields is None:
            return AdminResponse.text(
                f"Malformed delegation request: {req.body.decode('utf-8', 'replace')}", 400)
        ns, path, dtab = fields
        return await delegator_json(linker, ns, path, dtab)

    def handle_page(req: AdminRequest) -> AdminResponse:
        dtabs = {label: r.dtab.show for label, r in linker.routers.items()}
        return AdminResponse(body=_page(dtabs).encode(), content_type="text/html;charset=UTF-8")

    admin.add("/delegator.json", handle_json, "ui")
    admin.add("/delegator", handle_page, "ui")


def _script_json(value) -> str:
    """JSON safe inside <script>: a router label may contain "</script>"."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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
const dtabs = {_script_json(dtabs)};
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
