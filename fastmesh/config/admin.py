"""The ``admin`` section (§2.1): where the admin server (ping, metrics, delegator,
dashboard) listens, and which of its endpoints are served."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .schema import ConfigNode, as_bool, as_int, as_ip, as_port, as_regex, key, list_of, node_of
from .servers import ServerTlsConfig, SocketOptionsConfig

__all__ = ["AdminSecurityConfig", "AdminConfig"]


@dataclass(frozen=True, kw_only=True)
class AdminSecurityConfig(ConfigNode):
    """``admin.security``: endpoint categories on/off, plus regex allow/deny lists.

    An endpoint is served if its category is enabled and it is not blacklisted, or its
    category is disabled and it is whitelisted. "control" = ``/admin/shutdown`` and
    ``/logging.json``.
    """

    ui_enabled: bool = key("uiEnabled", as_bool, True)
    control_enabled: bool = key("controlEnabled", as_bool, True)
    diagnostics_enabled: bool = key("diagnosticsEnabled", as_bool, True)
    path_whitelist: tuple[str, ...] = key("pathWhitelist", list_of(as_regex), ())
    path_blacklist: tuple[str, ...] = key("pathBlacklist", list_of(as_regex), ())

    def allows(self, path: str, category_enabled: bool) -> bool:
        """Is an endpoint at ``path`` (whose category is on or off) served?"""
        if category_enabled:
            return not any(re.fullmatch(p, path) for p in self.path_blacklist)
        return any(re.fullmatch(p, path) for p in self.path_whitelist)


@dataclass(frozen=True, kw_only=True)
class AdminConfig(ConfigNode):
    """``admin``: the admin server's address (loopback:9990 unless set) and options."""

    ip: str = key("ip", as_ip, "127.0.0.1")
    port: int = key("port", as_port, 9990)
    tls: ServerTlsConfig | None = key("tls", node_of(ServerTlsConfig), None)
    socket_options: SocketOptionsConfig | None = key("socketOptions", node_of(SocketOptionsConfig), None)
    shutdown_grace_ms: int = key("shutdownGraceMs", as_int(0), 10000)
    http_identifier_port: int | None = key("httpIdentifierPort", as_port, None)
    worker_threads: int = key("workerThreads", as_int(1), 2)  # a JVM knob: accepted, unused
    security: AdminSecurityConfig = key("security", node_of(AdminSecurityConfig),
                                        default_factory=AdminSecurityConfig)
