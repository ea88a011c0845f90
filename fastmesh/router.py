"""A router: servers + identifier + dtab + client policy + the route cache.

The Cython request path (fastmesh._core.pump) reads `Router.routes` — identifier key bytes
→ Route — for every request, and calls back into this module only when:

* the key is not cached yet (first request for a name): identify, delegate, bind, build
  clients, cache the Route;
* the request carries an `l5d-dtab` / `l5d-ctx-dtab` override: the same, uncached (spec §6.2:
  the local dtab is part of the name);
* something went wrong and a linkerd-style error response has to be written (spec §7).

Namer changes re-bind every cached name and swap the Route in the dict (never a flush, so
requests in flight keep their old Route and new requests see the new one). Address-only
changes do not even touch the cache: the Client's endpoint list is replaced in place.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from fastmesh._core.pool import Client, Endpoint, RetryBudget, Route, retryable_method_mask
from fastmesh.errors import (attempt_timeout_message, connection_failed_message,
                             max_call_depth_message, no_route_message, total_timeout_message,
                             unknown_destination_message)
from fastmesh.identify import Identified, RequestInfo
from fastmesh.naming import AddrBound, AddrPending, Dtab, ParseError, Path
from fastmesh.responses import error_response

log = logging.getLogger("fastmesh.router")

PENDING = object()


@dataclass
class RouterLimits:
    """The HTTP limits of spec §2.4 that shape error responses."""
    max_headers_kb: int = 8
    max_initial_line_kb: int = 4
    max_err_response_kb: int = 5120


@dataclass(frozen=True)
class ServicePolicy:
    """What the request path needs of a service's params (spec §2.8, §9.3-9.5)."""
    classifier: str = "io.l5d.http.nonRetryable5XX"
    budget_ttl_secs: int = 10
    budget_min_retries_per_sec: float = 10.0
    budget_percent_can_retry: float = 0.2
    backoff_min_ms: float = 0.0
    backoff_max_ms: float = 0.0
    total_timeout_ms: int | None = None


@dataclass(frozen=True)
class ClientPolicy:
    """What the request path needs of a client's params (spec §2.7)."""
    tls: Any = None
    attempt_timeout_ms: int | None = None


@dataclass
class _Waiter:
    """Requests waiting for a name that is still binding (pending namer)."""
    service: Path
    local: Dtab
    consume: int
    key: bytes | None
    conns: list = field(default_factory=list)
    timer: Any = None


def _weighted_leaves(tree, weight: float = 1.0) -> Iterator[tuple[float, Any]]:
    """Flatten a bound tree into (probability, BoundName) pairs (spec §3.5 routing)."""
    kind = type(tree).__name__
    if kind == "Leaf":
        yield weight, tree.value
    elif kind == "Union":
        members = list(tree.weighted)
        total = sum(m.weight for m in members) or 1.0
        for m in members:
            yield from _weighted_leaves(m.tree, weight * m.weight / total)
    elif kind == "Alt":
        # a bound tree has no Alt; be safe: the first non-negative branch
        for t in tree.trees:
            leaves = list(_weighted_leaves(t, weight))
            if leaves:
                yield from leaves
                return
    # Neg, Fail, Empty: nothing to route to


def _stat_key(**fields: str) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class Router:
    """One configured router (e.g. `outgoing`): the Python side of its route cache."""

    def __init__(self, label: str, *, dtab: Dtab, identifier, interpreter, loop, arena,
                 client_policy_for: Callable[[str], ClientPolicy] = lambda _id: ClientPolicy(),
                 service_policy_for: Callable[[str], ServicePolicy] = lambda _s: ServicePolicy(),
                 connect_timeout_s: float = 5.0,
                 binding_timeout_s: float = 10.0,
                 limits: RouterLimits | None = None,
                 max_idle_per_endpoint: int = 256,
                 cacheable: bool = True):
        self.label = label
        self.dtab = dtab
        self.identifier = identifier
        self.interpreter = interpreter
        self.loop = loop
        self.arena = arena
        self.client_policy_for = client_policy_for
        self.service_policy_for = service_policy_for
        self._budgets: dict[str, RetryBudget] = {}
        self.connect_timeout_s = connect_timeout_s
        self.binding_timeout_s = binding_timeout_s
        self.limits = limits or RouterLimits()
        self.max_idle_per_endpoint = max_idle_per_endpoint
        self.cacheable = cacheable
        # The route cache read by the Cython path. Its identity never changes.
        self.routes: dict[bytes, Route] = {}
        self._cached: dict[bytes, tuple[Path, int]] = {}
        self.clients: dict[str, Client] = {}
        self._addr_watches: dict[str, Any] = {}
        self._service_stats: dict[str, Any] = {}
        self._waiting: dict[tuple[str, str], _Waiter] = {}
        self._refresh_scheduled = False
        self._pending_addr_watches: dict[int, Any] = {}
        self.access_log: Callable[[dict], None] | None = None
        self.stats = arena.alloc(_stat_key(kind="router", rt=label))

    # ---- called by the Cython core ---------------------------------------------------

    def lookup(self, conn, key: bytes):
        """Route-cache miss: identify, bind, cache. Returns a Route or None (pending)."""
        self.stats.add_named("route_misses")
        ident = self._identify(conn)
        if not isinstance(ident, Identified):
            return ident  # an error Route (400), not cached: its text names the request
        consume = self._consume_of(ident)
        route = self._bind(ident.path, Dtab.empty, consume)
        if route is PENDING:
            self._wait(conn, ident.path, Dtab.empty, consume, key)
            return None
        if self.cacheable:
            self.routes[key] = route
            self._cached[key] = (ident.path, consume)
        return route

    def lookup_override(self, conn, key: bytes):
        """A request with l5d-ctx-dtab / l5d-dtab: bind with base ++ local, uncached."""
        self.stats.add_named("route_overrides")
        ctx_values, dtab_values = conn.override_values()
        local = Dtab.empty
        try:
            for raw in list(ctx_values) + list(dtab_values):
                local = local + Dtab.read(raw.decode("utf-8"))
        except (ParseError, UnicodeDecodeError) as exc:
            return Route(err_status=400, err_response=self._error(400, str(exc)))
        ident = self._identify(conn)
        if not isinstance(ident, Identified):
            return ident
        consume = self._consume_of(ident)
        route = self._bind(ident.path, local, consume)
        if route is PENDING:
            self._wait(conn, ident.path, local, consume, None)
            return None
        return route

    def bad_request_response(self, conn, status: int, reason: str | None) -> bytes:
        if reason is None:
            reason = {414: "request line too long", 431: "request headers too large"}.get(
                status, "bad request")
        return self._error(status, reason, close=True)

    def max_call_depth_response(self, conn, limit: int) -> bytes:
        return self._error(400, max_call_depth_message(limit))

    def no_hosts_response(self, conn, route: Route, client: Client | None) -> bytes:
        service = Path.read(route.service_show) if route.service_show else Path.empty
        return self._error(502, no_route_message(service, self.dtab, Dtab.empty))

    def connect_error_response(self, conn, route: Route, client: Client, ep: Endpoint,
                               exc: BaseException) -> bytes:
        addresses = [e.addr_text.decode() for e in client.endpoints]
        msg = connection_failed_message(ep.addr_text.decode(), route.service_show,
                                        client.id_show, addresses, ep.addr_text.decode())
        # linkerd's text does not say why; we add the cause (refused, TLS verification
        # failure, timeout) as one more line — a deliberate extension.
        msg += f"reason: {_describe_exc(exc)}\n"
        return self._error(502, msg)

    def upstream_closed_response(self, conn, route: Route, client: Client, ep: Endpoint,
                                 exc: BaseException | None) -> bytes:
        why = _describe_exc(exc) if exc is not None else "connection closed by the endpoint"
        return self._error(502, f"ChannelClosedException: {why} (remote {ep.addr_text.decode()},"
                                f" client {client.id_show})")

    def upstream_protocol_response(self, conn, route: Route, client: Client, ep: Endpoint,
                                   exc: BaseException) -> bytes:
        return self._error(502, f"invalid response from {ep.addr_text.decode()} "
                                f"(client {client.id_show}): {exc}")

    def overloaded_response(self, conn, limit: int) -> bytes:
        return self._error(503, f"Request rejected: more than {limit} concurrent requests "
                                "(maxConcurrentRequests)")

    def timeout_response(self, conn, route: Route | None, client: Client | None,
                         total: bool) -> bytes:
        service = route.service_show if route is not None else "unknown"
        remote = "Not Available"
        if total:
            ms = self.service_policy_for(service).total_timeout_ms or 0
            return self._error(503, total_timeout_message(ms, service, remote))
        ms = self.client_policy_for(client.id_show).attempt_timeout_ms or 0 if client else 0
        return self._error(503, attempt_timeout_message(ms, service, remote))

    def internal_error_response(self, exc: BaseException) -> bytes:
        return self._error(500, f"internal error: {type(exc).__name__}", close=True)

    def log_access(self, conn) -> None:
        if self.access_log is not None:
            entry = conn.exchange_summary()
            entry["router"] = self.label
            self.access_log(entry)

    # ---- binding ---------------------------------------------------------------------

    def _identify(self, conn):
        method, target, version, headers = conn.request_info()
        req = RequestInfo(method=method, uri=target, version=version, headers=headers)
        try:
            ident = self.identifier.identify(req)
        except Exception as exc:  # an identifier that throws is an unidentified request
            ident = None
            reason = str(exc)
        else:
            reason = getattr(ident, "reason", "")
        if isinstance(ident, Identified):
            return ident
        peer = conn.peer()
        peer_s = f"/{peer[0]}:{peer[1]}" if peer else "unknown"
        desc = f'Request("{method} {target}", from {peer_s})'
        return Route(err_status=400,
                     err_response=self._error(400, unknown_destination_message(desc, reason)))

    def _consume_of(self, ident: Identified) -> int:
        # io.l5d.path with consume: the core strips this many segments from the target.
        return int(getattr(ident, "consume_segments", 0) or 0)

    def _bind(self, service: Path, local: Dtab, consume: int):
        result = self.interpreter.bind(self.dtab + local, service)
        if getattr(result, "pending", False):
            return PENDING
        error = getattr(result, "error", None)
        if error:
            return Route(err_status=502, err_response=self._error(502, error),
                         service_show=service.show)
        leaves = list(_weighted_leaves(result.tree))
        pending_addrs = [b.addr for _w, b in leaves if b.addr.value is AddrPending]
        if pending_addrs:
            # A bound name whose addresses are not known yet (a k8s watch, or a
            # transformer's gateways, still loading): wait like linkerd, re-binding when
            # any of them changes, up to the binding timeout.
            for var in pending_addrs:
                if id(var) not in self._pending_addr_watches:
                    self._pending_addr_watches[id(var)] = var.observe(self._pending_addr_changed)
            return PENDING
        if not leaves:
            return Route(err_status=502,
                         err_response=self._error(502, no_route_message(service, self.dtab, local)),
                         service_show=service.show)
        clients: list[Client] = []
        weights: list[float] = []
        for weight, bound in leaves:
            client = self._client_for(bound)
            if client in clients:
                weights[clients.index(client)] += weight
            else:
                clients.append(client)
                weights.append(weight)
        residual = leaves[0][1].residual
        policy = self.service_policy_for(service.show)
        return Route(clients=clients, weights=weights, service_show=service.show,
                     residual=residual.show.encode() if len(residual) else b"",
                     ctx_dtab=local.show.encode() if local.entries else b"",
                     service_stats=self._stats_for_service(service.show),
                     consume_segments=consume,
                     retry_methods=retryable_method_mask(policy.classifier),
                     failure_5xx=policy.classifier != "io.l5d.http.allSuccessful",
                     budget=self._budget_for(service.show, policy),
                     backoff_min_ms=policy.backoff_min_ms,
                     backoff_max_ms=policy.backoff_max_ms,
                     total_timeout=(policy.total_timeout_ms or 0) / 1000.0)

    def _budget_for(self, service_show: str, policy: ServicePolicy) -> RetryBudget:
        # One budget per service name (linkerd: "per service name, not shared").
        budget = self._budgets.get(service_show)
        if budget is None:
            budget = RetryBudget(policy.budget_ttl_secs, policy.budget_min_retries_per_sec,
                                 policy.budget_percent_can_retry)
            self._budgets[service_show] = budget
        return budget

    def _client_for(self, bound) -> Client:
        id_show = bound.id_show if hasattr(bound, "id_show") else bound.id.show
        client = self.clients.get(id_show)
        if client is not None:
            return client
        policy = self.client_policy_for(id_show)
        client = Client(id_show, [], tls=policy.tls,
                        stats=self.arena.alloc(_stat_key(kind="client", rt=self.label,
                                                         client=id_show)),
                        owner=self, connect_timeout=self.connect_timeout_s,
                        max_idle=self.max_idle_per_endpoint,
                        attempt_timeout=(policy.attempt_timeout_ms or 0) / 1000.0)
        self.clients[id_show] = client
        addr_var = bound.addr

        def on_addr(addr, client=client) -> None:
            client.set_endpoints(_endpoints_of(addr))

        on_addr(addr_var.value)
        self._addr_watches[id_show] = addr_var.observe(on_addr)
        return client

    def _stats_for_service(self, service_show: str):
        blk = self._service_stats.get(service_show)
        if blk is None:
            blk = self.arena.alloc(_stat_key(kind="service", rt=self.label, service=service_show))
            self._service_stats[service_show] = blk
        return blk

    # ---- pending names and namer changes ---------------------------------------------

    def _wait(self, conn, service: Path, local: Dtab, consume: int, key: bytes | None) -> None:
        wkey = (service.show, local.show)
        waiter = self._waiting.get(wkey)
        if waiter is None:
            waiter = _Waiter(service, local, consume, key)
            waiter.timer = self.loop.call_later(self.binding_timeout_s, self._binding_timeout, wkey)
            self._waiting[wkey] = waiter
        waiter.conns.append(conn)

    def _binding_timeout(self, wkey) -> None:
        waiter = self._waiting.pop(wkey, None)
        if waiter is None:
            return
        secs = self.binding_timeout_s
        dur = f"{int(secs)}.seconds" if secs == int(secs) else f"{int(secs * 1000)}.milliseconds"
        msg = (f"exceeded {dur} to unspecified while dyn binding {waiter.service.show}. "
               "Remote Info: Not Available")
        route = Route(err_status=503, err_response=self._error(503, msg))
        for conn in waiter.conns:
            conn.route_ready(route)

    def _pending_addr_changed(self, _addr) -> None:
        for closable in self._pending_addr_watches.values():
            closable.close()
        self._pending_addr_watches.clear()
        self.namers_changed()

    def namers_changed(self) -> None:
        """A namer's answer may have changed: re-bind soon (coalesced)."""
        if not self._refresh_scheduled:
            self._refresh_scheduled = True
            self.loop.call_soon(self.refresh)

    def refresh(self) -> None:
        """Re-bind every cached name and every waiting one; swap changed Routes in place."""
        self._refresh_scheduled = False
        for key, (service, consume) in list(self._cached.items()):
            try:
                route = self._bind(service, Dtab.empty, consume)
            except Exception:  # keep serving the old route; the failure is logged
                log.exception("re-binding %s failed", service.show)
                continue
            if route is PENDING:
                continue
            self.routes[key] = route
            self.stats.add_named("route_refreshes")
        for wkey, waiter in list(self._waiting.items()):
            route = self._bind(waiter.service, waiter.local, waiter.consume)
            if route is PENDING:
                continue
            del self._waiting[wkey]
            waiter.timer.cancel()
            if waiter.key is not None and self.cacheable:
                self.routes[waiter.key] = route
                self._cached[waiter.key] = (waiter.service, waiter.consume)
            for conn in waiter.conns:
                conn.route_ready(route)

    def set_dtab(self, dtab: Dtab) -> None:
        """Replace the base dtab: every cached name is re-bound in place (not flushed)."""
        self.dtab = dtab
        self.refresh()

    def invalidate(self) -> None:
        """Forget every cached route (dtab replaced); the next request re-binds."""
        self.routes.clear()
        self._cached.clear()

    # ---- helpers ---------------------------------------------------------------------

    def _error(self, status: int, message: str, *, close: bool = False) -> bytes:
        return error_response(status, message, close=close,
                              max_headers_kb=self.limits.max_headers_kb,
                              max_err_response_kb=self.limits.max_err_response_kb)

    def close(self) -> None:
        for closable in self._addr_watches.values():
            try:
                closable.close()
            except Exception:
                pass
        self._addr_watches.clear()
        for closable in self._pending_addr_watches.values():
            closable.close()
        self._pending_addr_watches.clear()
        for waiter in self._waiting.values():
            waiter.timer.cancel()
        self._waiting.clear()
        for client in self.clients.values():
            for ep in client.endpoints:
                for conn in list(ep.idle):
                    conn.close()
                ep.idle = []


def _endpoints_of(addr) -> list[Endpoint]:
    if isinstance(addr, AddrBound):
        return [Endpoint(a.host, a.port) for a in sorted(addr.addresses, key=lambda a: (a.host, a.port))]
    return []


def _describe_exc(exc: BaseException) -> str:
    import ssl
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return str(exc) or "connect timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
