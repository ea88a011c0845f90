"""Config keys fastmesh parses but does not act on yet: refused at start, by YAML path.

fastmesh.config accepts everything linkerd 1.x accepts, so a linkerd ConfigMap loads. A
key the runtime would silently ignore changes behaviour without telling anyone (a
retry policy that never retries, a timeout that never fires), so `fastmesh run` refuses
every explicitly set key in this table with "<path>: ... is not supported yet". Keys
whose default behaviour fastmesh already has (e.g. `loadBalancer: {kind: p2c}`) pass.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Iterator

from fastmesh.config import Config, ConfigError

# (path pattern, predicate on the value — None means "any explicit value", reason)
Rule = tuple[str, Callable[[Any], bool] | None, str]

_CLIENT_PARAMS: list[tuple[str, Callable[[Any], bool] | None, str]] = [
    ("loadBalancer", lambda v: v.get("kind") != "p2c",
     "only the p2c load balancer (linkerd's default) is built"),
    ("failureAccrual", lambda v: v.get("kind") != "none",
     "configurable failure accrual is not built (fastmesh briefly avoids endpoints that "
     "refuse connections; `kind: none` is accepted)"),
    ("failFast", lambda v: bool(v), "failFast is not built"),
    ("hostConnectionPool", None, "hostConnectionPool limits are not built"),
    ("clientSession", None, "clientSession timeouts are not built"),
    ("socketOptions", None, "client socketOptions are not built"),
    ("forwardClientCert", lambda v: bool(v), "forwardClientCert is not built"),
]
_SERVICE_PARAMS: list[tuple[str, Callable[[Any], bool] | None, str]] = []

RULES: list[Rule] = [
    ("admin.socketOptions", None, "admin socketOptions are not built"),
    ("admin.httpIdentifierPort", None, "the identifier admin port is not built"),
    ("routers[*].servers[*].timeoutMs", None, "server timeoutMs is not built"),
    ("routers[*].servers[*].socketOptions.noDelay", lambda v: v is False,
     "fastmesh always sets TCP_NODELAY (uvloop's default)"),
    ("routers[*].servers[*].socketOptions.readTimeoutMs", None, "read timeouts are not built"),
    ("routers[*].servers[*].socketOptions.writeTimeoutMs", None, "write timeouts are not built"),
    ("routers[*].servers[*].serverSession", None, "serverSession timeouts are not built"),
    ("routers[*].servers[*].announce", lambda v: bool(v), "announcers are not built"),
    ("routers[*].servers[*].addForwardedHeader", None, "the Forwarded header is not built"),
    ("routers[*].streamingEnabled", lambda v: v is False,
     "fastmesh always streams bodies; streamingEnabled: false is not built"),
    ("routers[*].compressionLevel", lambda v: v not in (-1, 0),
     "response compression is not built (fastmesh never compresses; -1 and 0 are accepted)"),
    ("routers[*].tracePropagator", lambda v: v.get("kind") != "io.l5d.default",
     "only the io.l5d.default trace propagator (l5d-ctx-trace) is built"),
    ("routers[*].httpAccessLogRollPolicy", lambda v: v != "never",
     "access log rolling is not built"),
    ("routers[*].httpAccessLogRotateCount", lambda v: v != -1, "access log rotation is not built"),
    ("telemetry[*]", lambda v: v.get("kind") in ("io.l5d.zipkin", "io.l5d.statsd",
                                                  "io.l5d.influxdb", "io.l5d.tracelog"),
     "this telemeter is not built (io.l5d.prometheus and io.l5d.recentRequests are)"),
]
for _key, _pred, _why in _CLIENT_PARAMS:
    RULES.append((f"routers[*].client.{_key}", _pred, _why))
    RULES.append((f"routers[*].client.configs[*].{_key}", _pred, _why))
for _key, _pred, _why in _SERVICE_PARAMS:
    RULES.append((f"routers[*].service.{_key}", _pred, _why))
    RULES.append((f"routers[*].service.configs[*].{_key}", _pred, _why))


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def _pattern_matches(pattern: str, path: str) -> bool:
    # `[*]` is any index; fnmatch would treat the brackets as a character class
    return fnmatch.fnmatchcase(path.replace("[", "<").replace("]", ">"),
                               pattern.replace("[*]", "<*>"))


def check_supported(config: Config) -> None:
    """Raise ConfigError for the first explicitly set key fastmesh cannot honour yet."""
    doc = config.to_json()
    for path, value in _walk(doc, ""):
        for pattern, predicate, why in RULES:
            if _pattern_matches(pattern, path) and (predicate is None or predicate(value)):
                key = path.rsplit(".", 1)[-1]
                raise ConfigError(path, f"{key} is not supported yet by fastmesh: {why}")
