"""Server-side config: listening sockets, server TLS, and the HTTP server keys (§2.6).

A router's ``servers`` say where fastmesh accepts requests (``ip``/``port``), whether it
terminates TLS there (the incoming router's mesh certificate), and per-server request
rules (``clearContext``, ``maxCallDepth``, ``addForwardedHeader``). The admin server
reuses :class:`ServerTlsConfig` and :class:`SocketOptionsConfig`.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .schema import (ConfigNode, KindFamily, ParseContext, as_bool, as_int, as_ip, as_path,
                     as_port, as_str, key, list_of, node_of)

__all__ = [
    "SocketOptionsConfig", "ServerSessionConfig", "ServerTlsConfig", "LabelerConfig",
    "ForwardedHeaderConfig", "ServerConfig", "LABELER_KINDS", "bind_key",
]

_non_negative = as_int(0)


@dataclass(frozen=True, kw_only=True)
class SocketOptionsConfig(ConfigNode):
    """``socketOptions`` of a server (or client): TCP options set on each socket."""

    no_delay: bool = key("noDelay", as_bool, True)
    reuse_addr: bool = key("reuseAddr", as_bool, True)
    reuse_port: bool = key("reusePort", as_bool, False)
    read_timeout_ms: int | None = key("readTimeoutMs", _non_negative, None)
    write_timeout_ms: int | None = key("writeTimeoutMs", _non_negative, None)
    keep_alive: bool = key("keepAlive", as_bool, False)
    backlog: int | None = key("backlog", as_int(1), None)


@dataclass(frozen=True, kw_only=True)
class ServerSessionConfig(ConfigNode):
    """``serverSession``: close idle (or old) downstream connections."""

    idle_time_ms: int | None = key("idleTimeMs", _non_negative, None)
    life_time_ms: int | None = key("lifeTimeMs", _non_negative, None)


@dataclass(frozen=True, kw_only=True)
class ServerTlsConfig(ConfigNode):
    """Server ``tls``: serve TLS with this certificate and PKCS#8 key.

    ``enabled`` appears in linkerd's docs table but not in its code; fastmesh accepts
    ``enabled: true`` and ignores it, and refuses ``enabled: false`` (drop the section to
    serve plaintext) rather than silently serving TLS anyway.
    """

    cert_path: str = key("certPath", as_str, required=True)
    key_path: str = key("keyPath", as_str, required=True)
    intermediate_certs_path: str | None = key("intermediateCertsPath", as_str, None)
    ca_cert_path: str | None = key("caCertPath", as_str, None)
    require_client_auth: bool = key("requireClientAuth", as_bool, False)
    ciphers: tuple[str, ...] | None = key("ciphers", list_of(as_str), None)
    protocols: tuple[str, ...] | None = key("protocols", list_of(as_str), None)
    enabled: bool = key("enabled", as_bool, True)

    def check(self, path: str, ctx: ParseContext) -> None:
        if not self.enabled:
            raise ConfigError(f"{path}.enabled", "server tls 'enabled: false' is not supported; "
                                                 "remove the tls section to serve plaintext")


@dataclass(frozen=True, kw_only=True)
class LabelerConfig(ConfigNode):
    """How a ``Forwarded`` header names an endpoint (``by``/``for``)."""

    kind: str = key("kind", as_str, "requestRandom", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class _IpLabeler(LabelerConfig):
    kind: str = key("kind", as_str, "ip", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class _IpPortLabeler(LabelerConfig):
    kind: str = key("kind", as_str, "ip:port", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class _ConnectionRandomLabeler(LabelerConfig):
    kind: str = key("kind", as_str, "connectionRandom", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class _RouterLabeler(LabelerConfig):
    kind: str = key("kind", as_str, "router", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class StaticLabelerConfig(LabelerConfig):
    kind: str = key("kind", as_str, "static", always_emit=True)
    label: str = key("label", as_str, required=True)


LABELER_KINDS = KindFamily("labeler kind", {
    "ip": _IpLabeler,
    "ip:port": _IpPortLabeler,
    "connectionRandom": _ConnectionRandomLabeler,
    "requestRandom": LabelerConfig,
    "router": _RouterLabeler,
    "static": StaticLabelerConfig,
})


@dataclass(frozen=True, kw_only=True)
class ForwardedHeaderConfig(ConfigNode):
    """``addForwardedHeader``: add an RFC 7239 ``Forwarded`` header to each request."""

    by: LabelerConfig = key("by", LABELER_KINDS, default_factory=LabelerConfig)
    for_: LabelerConfig = key("for", LABELER_KINDS, default_factory=LabelerConfig)


@dataclass(frozen=True, kw_only=True)
class ServerConfig(ConfigNode):
    """One entry of a router's ``servers``: where (and how) requests are accepted."""

    ip: str = key("ip", as_ip, "127.0.0.1")
    port: int = key("port", as_port, 4140)
    tls: ServerTlsConfig | None = key("tls", node_of(ServerTlsConfig), None)
    max_concurrent_requests: int | None = key("maxConcurrentRequests", as_int(1), None)
    clear_context: bool = key("clearContext", as_bool, False)
    timeout_ms: int | None = key("timeoutMs", _non_negative, None)
    socket_options: SocketOptionsConfig | None = key("socketOptions", node_of(SocketOptionsConfig), None)
    server_session: ServerSessionConfig | None = key("serverSession", node_of(ServerSessionConfig), None)
    announce: tuple[Any, ...] = key("announce", list_of(as_path), ())
    label: str | None = key("label", as_str, None)  # None: the router's label
    # HTTP server keys (HttpServerConfig)
    add_forwarded_header: ForwardedHeaderConfig | None = key(
        "addForwardedHeader", node_of(ForwardedHeaderConfig), None)
    timestamp_header: str | None = key("timestampHeader", as_str, None)
    max_call_depth: int = key("maxCallDepth", as_int(1), 1000)

    @property
    def bind_key(self) -> tuple[str, int]:
        """(normalised ip, port): two servers with the same key cannot both bind."""
        return bind_key(self.ip, self.port)

    @property
    def address_text(self) -> str:
        """``ip:port`` as shown in conflict messages (``[::1]:4140`` for IPv6)."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def bind_key(ip: str, port: int) -> tuple[str, int]:
    """Normalise an address for conflict checks (``127.1`` and ``127.0.0.1`` are equal)."""
    try:
        return str(ipaddress.ip_address(ip)), port
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(ip)), port  # short IPv4 forms like 127.1
    except OSError:
        return ip.lower().rstrip("."), port
