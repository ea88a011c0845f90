"""The Linker: a whole fastmesh instance built from one linkerd-1.x config.

It turns the typed config (fastmesh.config) into running parts — namers, one Router per
`routers` entry with a ServerCore per server (the Cython request path), TLS contexts, the
stats arena and the admin server — and owns their lifecycle (start, graceful stop).
Nothing here runs per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from fastmesh._core.pump import ServerCore
from fastmesh._core.stats import StatsArena
from fastmesh.config import Config, ConfigError, RouterConfig, ServerConfig
from fastmesh.errors import NotSupportedError
from fastmesh.identify import build_identifier
from fastmesh.naming import Interpreter, Path
from fastmesh.router import ClientPolicy, Router, RouterLimits, ServicePolicy, _stat_key

log = logging.getLogger("fastmesh")

# ServerCore key kinds (pump.pxd KeyKind)
K_HOST, K_HEADER, K_METHOD_HOST, K_PATH, K_STATIC, K_LIST = range(6)


def _key_entry(spec: tuple) -> tuple[int, bytes | None, int, bool]:
    kind = spec[0]
    if kind in ("header", "header_path"):
        name = spec[1].lower()
        return (K_HOST, None, 0, False) if name == "host" else (K_HEADER, name.encode(), 0, False)
    if kind == "method_host":
        return (K_METHOD_HOST, None, 0, bool(spec[1]))
    if kind == "path":
        return (K_PATH, None, int(spec[1]), False)
    if kind == "static":
        return (K_STATIC, None, 0, False)
    raise ValueError(f"unknown identifier key spec {spec!r}")


def configure_key(core: ServerCore, key_spec: tuple) -> bool:
    """Teach the core how to build route-cache keys; False if they cannot be cached."""
    if key_spec[0] == "list":
        entries = [_key_entry(s) for s in key_spec[1]]
        headers = {e[1] for e in entries if e[0] == K_HEADER}
        if len(headers) > 1:
            # the core captures one non-Host header per request; such lists stay uncached
            return False
        core.key_kind = K_LIST
        core.key_list = entries
        core.key_header_name = next(iter(headers), None)
        return True
    kind, header, segments, uri = _key_entry(key_spec)
    core.key_kind = kind
    core.key_header_name = header
    core.key_path_segments = segments
    core.key_uri_in_dst = uri
    return True


def build_namers(config: Config) -> list[Any]:
    """Namers in config order (the interpreter applies linkerd's precedence).

    A namer kind fastmesh does not implement yet fails here, at start, with the YAML path.
    """
    from fastmesh.namers import build_namer
    namers = []
    for i, nc in enumerate(config.namers):
        params = nc.to_json()
        kind = params.pop("kind")
        try:
            namers.append(build_namer(kind, params))
        except NotSupportedError as exc:
            raise ConfigError(f"namers[{i}].kind", f"{exc} (fastmesh supports io.l5d.fs, "
                                                   "io.l5d.k8s and the /$ built-ins)") from exc
        except ValueError as exc:
            raise ConfigError(f"namers[{i}]", str(exc)) from exc
    return namers


def build_transformers(rc: RouterConfig, index: int) -> list[Any]:
    from fastmesh.naming import build_transformer
    out = []
    for j, tc in enumerate(rc.interpreter.transformers):
        params = tc.to_json()
        kind = params.pop("kind")
        try:
            out.append(build_transformer(kind, params))
        except NotSupportedError as exc:
            raise ConfigError(f"routers[{index}].interpreter.transformers[{j}].kind", str(exc)) from exc
        except ValueError as exc:  # e.g. the localnode transformer without POD_IP
            raise ConfigError(f"routers[{index}].interpreter.transformers[{j}]", str(exc)) from exc
    return out


class ClientTlsCache:
    """One ClientTls per distinct client tls config (static client configs may differ)."""

    def __init__(self):
        self._cache: dict[Any, Any] = {}

    def get(self, tls_cfg) -> Any:
        from fastmesh.tls import client_tls
        if tls_cfg is None or not tls_cfg.enabled:
            return None
        key = (tls_cfg.common_name, tuple(tls_cfg.trust_certs or ()), tls_cfg.trust_certs_bundle,
               tls_cfg.disable_validation, tls_cfg.client_auth, tuple(tls_cfg.protocols or ()))
        tls = self._cache.get(key)
        if tls is None:
            ca = tls_cfg.client_auth
            tls = client_tls(tls_cfg.common_name,
                             trust_certs=list(tls_cfg.trust_certs) if tls_cfg.trust_certs else None,
                             trust_certs_bundle=tls_cfg.trust_certs_bundle,
                             disable_validation=tls_cfg.disable_validation,
                             client_auth=(ca.cert_path, ca.key_path, ca.intermediate_certs_path)
                             if ca is not None else None,
                             protocols=list(tls_cfg.protocols) if tls_cfg.protocols else None)
            self._cache[key] = tls
        return tls


def service_policy(params) -> ServicePolicy:
    """ServiceParams (config) → the ServicePolicy the request path reads."""
    budget = params.retries.budget
    backoff = params.retries.backoff
    if backoff.kind == "jittered":
        lo, hi = float(backoff.min_ms), float(backoff.max_ms)
    else:
        lo = hi = float(getattr(backoff, "ms", 0) or 0)
    return ServicePolicy(classifier=params.response_classifier.kind,
                         budget_ttl_secs=budget.ttl_secs,
                         budget_min_retries_per_sec=float(budget.min_retries_per_sec),
                         budget_percent_can_retry=float(budget.percent_can_retry),
                         backoff_min_ms=lo, backoff_max_ms=hi,
                         total_timeout_ms=params.total_timeout_ms)


def server_ssl_context(sc: ServerConfig):
    t = sc.tls
    if t is None:
        return None
    from fastmesh.tls import server_context
    return server_context(t.cert_path, t.key_path,
                          intermediate_certs_path=t.intermediate_certs_path,
                          ca_cert_path=t.ca_cert_path,
                          require_client_auth=t.require_client_auth,
                          ciphers=list(t.ciphers) if t.ciphers else None,
                          protocols=list(t.protocols) if t.protocols else None)


def validate(config: Config) -> None:
    """Everything `fastmesh run` checks before binding (unsupported keys and kinds, namer
    directories, TLS files), without binding or watching anything. Raises ConfigError."""
    linker = Linker.build(config, None, StatsArena(256))
    for namer in linker.namers:
        namer.close()


@dataclass
class RunningServer:
    router: str
    ip: str
    port: int
    core: ServerCore
    tls: bool
    server: Any = None
    ssl: Any = None
    backlog: int = 1024
    reuse_port: bool = False


@dataclass
class Linker:
    """Everything one fastmesh process (or worker) runs."""
    config: Config
    loop: Any
    arena: StatsArena
    namers: list[Any] = field(default_factory=list)
    routers: dict[str, Router] = field(default_factory=dict)
    servers: list[RunningServer] = field(default_factory=list)
    admin: Any = None
    interpreters: dict[str, Interpreter] = field(default_factory=dict)
    shutdown_grace_s: float | None = None
    _shutdown: asyncio.Event | None = None
    access_logs: list[Any] = field(default_factory=list)

    def request_shutdown(self, grace_s: float | None = None) -> None:
        """Ask `serve_until_shutdown` to stop (admin /admin/shutdown, SIGTERM)."""
        self.shutdown_grace_s = grace_s
        if self._shutdown is None:
            self._shutdown = asyncio.Event()
        self._shutdown.set()

    async def serve_until_shutdown(self) -> None:
        if self._shutdown is None:
            self._shutdown = asyncio.Event()
        await self._shutdown.wait()
        await self.stop(self.shutdown_grace_s)

    workers: int = 1

    @classmethod
    def build(cls, config: Config, loop, arena: StatsArena | None = None,
              workers: int = 1) -> "Linker":
        """Construct every part without binding (so config errors surface first)."""
        from fastmesh.unsupported import check_supported
        check_supported(config)
        linker = cls(config=config, loop=loop, arena=arena or StatsArena(), workers=workers)
        linker.namers = build_namers(config)
        for i, rc in enumerate(config.routers):
            linker._build_router(i, rc)
        return linker

    def _build_router(self, index: int, rc: RouterConfig) -> None:
        transformers = build_transformers(rc, index)
        interpreter = Interpreter(self.namers, transformers)
        self.interpreters[rc.label] = interpreter
        identifier = build_identifier([ic.to_json() for ic in rc.identifier] or None, rc.dst_prefix)
        tls_cache = ClientTlsCache()

        def client_policy_for(client_id: str, rc=rc, tls_cache=tls_cache) -> ClientPolicy:
            params = rc.client.params_for(client_id)
            return ClientPolicy(tls=tls_cache.get(params.tls),
                                attempt_timeout_ms=params.request_attempt_timeout_ms)

        def service_policy_for(service: str, rc=rc) -> ServicePolicy:
            return service_policy(rc.service.params_for(service))

        # Fail at start, not on the first request, when the client TLS files are bad.
        if rc.client.kind == "io.l5d.global" and rc.client.params.tls is not None:
            try:
                tls_cache.get(rc.client.params.tls)
            except Exception as exc:
                raise ConfigError(f"routers[{index}].client.tls", str(exc)) from exc
        router = Router(rc.label, dtab=rc.dtab.parsed, identifier=identifier,
                        interpreter=interpreter, loop=self.loop, arena=self.arena,
                        client_policy_for=client_policy_for,
                        service_policy_for=service_policy_for,
                        binding_timeout_s=rc.binding_timeout_ms / 1000.0,
                        limits=RouterLimits(rc.max_headers_kb, rc.max_initial_line_kb,
                                            rc.max_err_response_kb))
        for namer in self.namers:
            namer.add_listener(router.namers_changed)
        self.routers[rc.label] = router
        access_log = None
        if rc.http_access_log and self.loop is not None:
            from fastmesh.accesslog import open_access_log
            try:
                access_log = open_access_log(rc.http_access_log, append=rc.http_access_log_append,
                                             roll_policy=rc.http_access_log_roll_policy,
                                             rotate_count=rc.http_access_log_rotate_count,
                                             loop=self.loop)
            except (OSError, NotSupportedError) as exc:
                raise ConfigError(f"routers[{index}].httpAccessLog", str(exc)) from exc
            router.access_log = access_log.write
            self.access_logs.append(access_log)
        for j, sc in enumerate(rc.servers):
            try:
                ssl_ctx = server_ssl_context(sc)
            except Exception as exc:
                raise ConfigError(f"routers[{index}].servers[{j}].tls", str(exc)) from exc
            core = ServerCore(router, router.routes,
                              self.arena.alloc(_stat_key(kind="server", rt=rc.label,
                                                         server=f"{sc.ip}/{sc.port}")),
                              self.loop)
            core.clear_context = sc.clear_context
            core.access_log = router.access_log
            core.tls = ssl_ctx is not None
            core.max_call_depth = getattr(sc, "max_call_depth", 1000) or 1000
            # With N workers each takes its share (connections spread by SO_REUSEPORT).
            core.max_concurrent = -(-(sc.max_concurrent_requests or 0) // self.workers)
            core.timestamp_header = sc.timestamp_header.encode() if sc.timestamp_header else None
            opts = sc.socket_options
            core.tcp_keepalive = bool(opts and opts.keep_alive)
            core.max_header_bytes = rc.max_headers_kb * 1024
            core.max_target_bytes = rc.max_initial_line_kb * 1024
            router.cacheable = configure_key(core, identifier.key_spec) and router.cacheable
            running = RunningServer(rc.label, sc.ip, sc.port, core, ssl_ctx is not None)
            running.ssl = ssl_ctx
            running.backlog = (opts.backlog if opts and opts.backlog else 1024)
            running.reuse_port = bool(opts and opts.reuse_port)
            self.servers.append(running)

    async def start(self, *, reuse_port: bool = False, admin: bool = True) -> None:
        for namer in self.namers:
            if hasattr(namer, "load_now"):
                namer.load_now()
            namer.start(self.loop)
        for transformer in self._transformers():  # the daemonset one watches the API
            transformer.start(self.loop)
        for rs in self.servers:
            rs.server = await self.loop.create_server(
                rs.core, rs.ip, rs.port, ssl=rs.ssl,
                reuse_port=(reuse_port or rs.reuse_port) or None,
                backlog=rs.backlog, ssl_handshake_timeout=10.0 if rs.ssl else None)
        if admin:
            await self.start_admin()

    def _transformers(self) -> list[Any]:
        """Interpreter transformers that own a lifecycle (start/close)."""
        return [t for interp in self.interpreters.values() for t in interp.transformers
                if hasattr(t, "start") and hasattr(t, "close")]

    async def start_admin(self, reuse_port: bool = False) -> None:
        from fastmesh.admin.endpoints import build_admin
        self.admin = build_admin(self)
        await self.admin.serve(self.loop, self.config.admin.ip, self.config.admin.port,
                               reuse_port=reuse_port)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (up to the grace), then close."""
        if grace_s is None:
            grace_s = self.config.admin.shutdown_grace_ms / 1000.0
        for rs in self.servers:
            if rs.server is not None:
                rs.server.close()
        deadline = self.loop.time() + grace_s
        while self.loop.time() < deadline and any(
                _busy(conn) for rs in self.servers for conn in rs.core.conns):
            await asyncio.sleep(0.05)
        for rs in self.servers:
            for conn in list(rs.core.conns):
                conn.close_when_idle()
        for router in self.routers.values():
            router.close()
        for namer in self.namers:
            namer.close()
        for transformer in self._transformers():
            transformer.close()
        for log_ in self.access_logs:
            log_.close()
        if self.admin is not None:
            self.admin.close()


def _busy(conn) -> bool:
    return conn.is_busy()
