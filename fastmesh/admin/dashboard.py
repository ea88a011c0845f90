"""The admin dashboard at ``/`` (and ``/services``, ``?router=<label>``), live from the C counters.

Role in the data path: none. linkerd 1.x serves its dashboard at ``/`` (spec §8.1); ours is
three static files in fastmesh/admin/static (plain JS drawing on canvas, no build step, no
network beyond this admin server) plus one JSON document, ``/dashboard.json``, that the
page polls every second.

``/dashboard.json`` carries *cumulative* numbers straight from the stats arena (requests,
successes, failures, connections, latency bucket counts per server, client and service,
summed over workers) and the server's clock; the page takes the difference of two polls
to get requests/s, success rate and p50/p95/p99 of the last second. So the server keeps
no per-viewer state, any number of tabs can watch, and a poll costs one arena snapshot.
The routers' dtabs are included for the delegator panel, which posts to
``/delegator.json`` like the ``/delegator`` page does.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from fastmesh.admin.metrics import (BOUNDS_US, CLASS_BASE, HIST_BASE, NBUCKETS, SLOT, BlockKey,
                                    process_uptime_ms)
from fastmesh.admin.server import AdminRequest, AdminResponse, AdminServer

if TYPE_CHECKING:
    from fastmesh.linker import Linker

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
CONTENT_TYPES = {".html": "text/html;charset=UTF-8", ".js": "application/javascript;charset=UTF-8",
                 ".css": "text/css;charset=UTF-8", ".svg": "image/svg+xml"}
PAGE = "dashboard.html"

# Cumulative numbers the page reads per scope (name in JSON, arena slot).
SCOPE_FIELDS = (("requests", "requests"), ("success", "success"), ("failures", "failures"),
                ("pending", "pending"), ("connections", "connections"),
                ("errors", "errors"), ("received_bytes", "received_bytes"),
                ("sent_bytes", "sent_bytes"), ("pool_hits", "pool_hits"),
                ("pool_misses", "pool_misses"), ("connect_failures", "connect_failures"),
                ("tls_handshakes", "tls_handshakes"), ("tls_failures", "tls_failures"))


def _scope(bk: BlockKey, slots: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": bk.scope_name}
    for name, slot in SCOPE_FIELDS:
        out[name] = slots[SLOT[slot]]
    out["status"] = {f"{c}XX": slots[CLASS_BASE + c] for c in range(1, 6)}
    out["buckets"] = slots[HIST_BASE:HIST_BASE + NBUCKETS]
    return out


def dashboard_data(linker: "Linker") -> dict[str, Any]:
    """Everything the page draws, cumulative since start (see the module docstring)."""
    snapshot = linker.arena.snapshot()
    routers: dict[str, dict[str, Any]] = {}
    for label, router in linker.routers.items():
        routers[label] = {"label": label, "dtab": router.dtab.show,
                          "servers": [], "clients": [], "services": []}
    for key, slots in snapshot.items():
        bk = BlockKey.parse(key)
        if bk is None or bk.kind == "router":
            continue
        entry = routers.setdefault(bk.rt, {"label": bk.rt, "dtab": "", "servers": [],
                                           "clients": [], "services": []})
        scope = _scope(bk, slots)
        if bk.kind == "client":
            router = linker.routers.get(bk.rt)
            client = router.clients.get(bk.name) if router is not None else None
            # Endpoints are known in the process that binds names; with --workers the
            # admin parent has none, and the page shows the counters only.
            if client is not None:
                scope["endpoints"] = [ep.addr_text.decode() for ep in client.endpoints]
        entry[bk.kind + "s"].append(scope)
    for entry in routers.values():
        for kind in ("servers", "clients", "services"):
            entry[kind].sort(key=lambda s: s["name"])
    return {
        "time": time.time(),
        "uptime_ms": process_uptime_ms(),
        # upper bounds in ms of each bucket; the last one is unbounded (null)
        "bounds_ms": [b / 1000.0 for b in BOUNDS_US[:-1]] + [None],
        "routers": list(routers.values()),
    }


def _static(name: str) -> AdminResponse | None:
    if name not in os.listdir(STATIC_DIR):     # only files we ship; no path tricks
        return None
    ext = os.path.splitext(name)[1]
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        body = f.read()
    return AdminResponse(body=body, content_type=CONTENT_TYPES.get(ext, "application/octet-stream"),
                         headers=[("Cache-Control", "no-cache")])


def install(admin: AdminServer, linker: "Linker") -> None:
    """Serve the dashboard page, its files under /files/ and /dashboard.json on `admin`."""

    def page(req: AdminRequest) -> AdminResponse:
        resp = _static(PAGE)
        assert resp is not None, f"{PAGE} missing from {STATIC_DIR}"
        return resp

    def files(req: AdminRequest) -> AdminResponse:
        name = req.path[len("/files/"):]
        resp = _static(name) if "/" not in name else None
        return resp if resp is not None else AdminResponse.text("not found\n", 404)

    def data(req: AdminRequest) -> AdminResponse:
        body = json.dumps(dashboard_data(linker), separators=(",", ":")).encode()
        return AdminResponse(body=body, content_type="application/json",
                             headers=[("Cache-Control", "no-store")])

    admin.add("/", page, "ui")
    admin.add("/services", page, "ui")
    admin.add("/files", files, "ui", prefix=True)
    admin.add("/dashboard.json", data, "ui")
