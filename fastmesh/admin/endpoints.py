"""The admin endpoints of spec §8.1 that every fastmesh serves, wired to a Linker.

Metrics (Prometheus, metrics.json) and the dashboard live in their own modules and are
registered here too, so `build_admin` is the one list of what :9990 serves.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fastmesh.admin.server import AdminRequest, AdminResponse, AdminSecurity, AdminServer

if TYPE_CHECKING:
    from fastmesh.linker import Linker

PING_HEADERS = [("Content-Language", "en")]


def build_admin(linker: "Linker") -> AdminServer:
    sec = linker.config.admin.security
    admin = AdminServer(AdminSecurity(ui=sec.ui_enabled, control=sec.control_enabled,
                                      diagnostics=sec.diagnostics_enabled,
                                      whitelist=tuple(sec.path_whitelist),
                                      blacklist=tuple(sec.path_blacklist)))

    def ping(req: AdminRequest) -> AdminResponse:
        return AdminResponse.text("pong", headers=PING_HEADERS)

    def shutdown(req: AdminRequest) -> AdminResponse:
        if req.method != "POST":
            return AdminResponse(status=405, headers=[("Allow", "POST")])
        grace = req.arg("grace")
        grace_s = None
        if grace is not None:
            try:
                grace_s = _parse_duration(grace)
            except ValueError:
                return AdminResponse.text(f"invalid grace: {grace}\n", 400)
        linker.loop.call_soon(linker.request_shutdown, grace_s)
        return AdminResponse.text("quitting\n")

    def config_json(req: AdminRequest) -> AdminResponse:
        return AdminResponse(body=json.dumps(linker.config.to_json()).encode(),
                             content_type="application/json;charset=UTF-8")

    def index(req: AdminRequest) -> AdminResponse:
        return AdminResponse.text("\n".join(admin.paths()) + "\n")

    admin.add("/admin/ping", ping, "diagnostics")
    admin.add("/admin/shutdown", shutdown, "control")
    admin.add("/config.json", config_json, "diagnostics")
    admin.add("/admin", index, "diagnostics")
    admin.add("/admin/index.txt", index, "diagnostics")

    from fastmesh.admin import delegator
    delegator.install(admin, linker)
    try:
        from fastmesh.admin import metrics
    except ImportError:
        metrics = None
    if metrics is not None:
        metrics.install(admin, linker)
    try:
        from fastmesh.admin import dashboard
    except ImportError:
        dashboard = None
    if dashboard is not None:
        dashboard.install(admin, linker)
    return admin


def _parse_duration(text: str) -> float:
    """'10.seconds', '500.milliseconds', '3s', '250ms' → seconds."""
    t = text.strip().lower()
    for suffix, scale in ((".milliseconds", 1e-3), (".seconds", 1.0), ("ms", 1e-3), ("s", 1.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * scale
    return float(t)
