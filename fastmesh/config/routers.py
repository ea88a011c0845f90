"""``routers`` (§2.3, §2.4): one HTTP router = servers + identifier + dtab + policies.

A router names each request (identifier → ``/svc/<Host>``), resolves the name through
its dtab and the namers (interpreter), and forwards with its client/service policies.
Only ``protocol: http`` runs on fastmesh; linkerd's other protocols are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .client import CLIENT_KINDS, ClientConfig
from .errors import ConfigError, join_path
from .namers import INTERPRETER_KINDS, InterpreterConfig
from .schema import (ConfigNode, KindFamily, ParseContext, as_bool, as_int, as_path, as_str, key,
                     list_of, node_of, one_or_list)
from .servers import ServerConfig
from .service import SERVICE_KINDS, ServiceConfig

__all__ = [
    "IdentifierConfig", "HeaderTokenIdentifierConfig", "HeaderIdentifierConfig",
    "MethodAndHostIdentifierConfig", "PathIdentifierConfig", "StaticIdentifierConfig",
    "IDENTIFIER_KINDS", "TracePropagatorConfig", "TRACE_PROPAGATOR_KINDS", "BindingCacheConfig",
    "DtabConfig", "RouterConfig", "ROUTER_PROTOCOLS",
]

_non_negative = as_int(0)


# --- identifiers ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IdentifierConfig(ConfigNode):
    """How a request becomes a name under the router's ``dstPrefix`` (§4)."""

    kind: str = key("kind", as_str, required=True, always_emit=True)


@dataclass(frozen=True, kw_only=True)
class HeaderTokenIdentifierConfig(IdentifierConfig):
    """``io.l5d.header.token`` (the default): the header's value as one label."""

    kind: str = key("kind", as_str, "io.l5d.header.token", always_emit=True)
    header: str = key("header", as_str, "Host")


@dataclass(frozen=True, kw_only=True)
class HeaderIdentifierConfig(IdentifierConfig):
    """``io.l5d.header``: the header's value parsed as a path."""

    kind: str = key("kind", as_str, "io.l5d.header", always_emit=True)
    header: str = key("header", as_str, "l5d-name")


@dataclass(frozen=True, kw_only=True)
class MethodAndHostIdentifierConfig(IdentifierConfig):
    """``io.l5d.methodAndHost``: ``/<version>/<METHOD>/<host>[/uri path]``."""

    kind: str = key("kind", as_str, "io.l5d.methodAndHost", always_emit=True)
    http_uri_in_dst: bool = key("httpUriInDst", as_bool, False)


@dataclass(frozen=True, kw_only=True)
class PathIdentifierConfig(IdentifierConfig):
    """``io.l5d.path``: the first ``segments`` URL path segments (optionally consumed)."""

    kind: str = key("kind", as_str, "io.l5d.path", always_emit=True)
    segments: int = key("segments", as_int(1), 1)
    consume: bool = key("consume", as_bool, False)


@dataclass(frozen=True, kw_only=True)
class StaticIdentifierConfig(IdentifierConfig):
    """``io.l5d.static``: always ``dstPrefix ++ path``."""

    kind: str = key("kind", as_str, "io.l5d.static", always_emit=True)
    path: Any = key("path", as_path, required=True)  # a fastmesh.naming.Path


IDENTIFIER_KINDS = KindFamily(
    "identifier kind",
    {
        "io.l5d.header.token": HeaderTokenIdentifierConfig,
        "io.l5d.header": HeaderIdentifierConfig,
        "io.l5d.methodAndHost": MethodAndHostIdentifierConfig,
        "io.l5d.path": PathIdentifierConfig,
        "io.l5d.static": StaticIdentifierConfig,
    },
    unsupported=frozenset({"io.l5d.ingress", "io.l5d.k8s.istio", "io.l5d.k8s.istio-ingress"}),
)


# --- other router sections -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TracePropagatorConfig(ConfigNode):
    """``tracePropagator``: ``io.l5d.default`` (l5d-ctx-trace) or ``io.l5d.zipkin`` (B3)."""

    kind: str = key("kind", as_str, "io.l5d.default", always_emit=True)


TRACE_PROPAGATOR_KINDS = KindFamily("trace propagator kind", {
    "io.l5d.default": TracePropagatorConfig,
    "io.l5d.zipkin": TracePropagatorConfig,
})


@dataclass(frozen=True, kw_only=True)
class BindingCacheConfig(ConfigNode):
    """``bindingCache``: sizes of the routing caches and their idle expiry."""

    paths: int = key("paths", _non_negative, 1000)
    trees: int = key("trees", _non_negative, 1000)
    bounds: int = key("bounds", _non_negative, 1000)
    clients: int = key("clients", _non_negative, 1000)
    idle_ttl_secs: int = key("idleTtlSecs", _non_negative, 600)


@dataclass(frozen=True)
class DtabConfig:
    """A router's base dtab: the text as written and the parsed :class:`fastmesh.naming.Dtab`.

    Two dtabs are equal when they parse the same (layout and comments do not count).
    """

    text: str = field(compare=False)
    parsed: Any

    def __str__(self) -> str:
        return str(self.parsed)  # the canonical (shown) form, as linkerd re-serialises it


def _as_dtab(value: Any, path: str, ctx: ParseContext) -> DtabConfig:
    from fastmesh.naming import Dtab, ParseError  # lazy: naming is a sibling package

    text = as_str(value, path, ctx)
    try:
        return DtabConfig(text=text, parsed=Dtab.read(text))
    except ParseError as exc:
        raise ConfigError(path, f"invalid dtab: {exc}") from exc


def _no_announcers(value: Any, path: str, ctx: ParseContext) -> tuple[()]:
    items = list_of(lambda v, p, c: v)(value, path, ctx)
    if items:
        raise ConfigError(join_path(path, 0), "announcers are not supported by fastmesh")
    return ()


# --- the router -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RouterConfig(ConfigNode):
    """One ``routers`` entry (``protocol: http``) with every key typed and defaulted."""

    protocol: str = key("protocol", as_str, "http", always_emit=True)
    label: str = key("label", as_str, "http")  # defaults to the protocol name
    dtab: DtabConfig = key("dtab", _as_dtab, None)  # filled by complete(): empty dtab
    dst_prefix: Any = key("dstPrefix", as_path, None)  # filled by complete(): Path /svc
    identifier: tuple[IdentifierConfig, ...] = key(
        "identifier", one_or_list(IDENTIFIER_KINDS),
        default_factory=lambda: (HeaderTokenIdentifierConfig(),))
    interpreter: InterpreterConfig = key("interpreter", INTERPRETER_KINDS,
                                         default_factory=InterpreterConfig)
    servers: tuple[ServerConfig, ...] = key("servers", list_of(node_of(ServerConfig), min_items=1),
                                            required=True)
    client: ClientConfig = key("client", CLIENT_KINDS, default_factory=ClientConfig,
                               always_emit=True)
    service: ServiceConfig = key("service", SERVICE_KINDS, default_factory=ServiceConfig)
    binding_timeout_ms: int = key("bindingTimeoutMs", as_int(1), 10000)
    binding_cache: BindingCacheConfig = key("bindingCache", node_of(BindingCacheConfig),
                                            default_factory=BindingCacheConfig)
    originator: bool = key("originator", as_bool, False)
    announcers: tuple[()] = key("announcers", _no_announcers, ())
    experimental: bool = key("experimental", as_bool, False)
    # HTTP router keys (HttpConfig)
    max_headers_kb: int = key("maxHeadersKB", as_int(1), 8)
    max_initial_line_kb: int = key("maxInitialLineKB", as_int(1), 4)
    max_err_response_kb: int = key("maxErrResponseKB", _non_negative, 5120)
    streaming_enabled: bool = key("streamingEnabled", as_bool, True)
    stream_after_content_length_kb: int = key("streamAfterContentLengthKB", _non_negative, 5)
    compression_level: int = key("compressionLevel", as_int(-1, 9), -1)
    http_access_log: str | None = key("httpAccessLog", as_str, None)
    http_access_log_roll_policy: str = key("httpAccessLogRollPolicy", as_str, "never")
    http_access_log_append: bool = key("httpAccessLogAppend", as_bool, True)
    http_access_log_rotate_count: int = key("httpAccessLogRotateCount", as_int(-1), -1)
    trace_propagator: TracePropagatorConfig = key("tracePropagator", TRACE_PROPAGATOR_KINDS,
                                                  default_factory=TracePropagatorConfig)

    @classmethod
    def complete(cls, values: dict[str, Any], path: str, ctx: ParseContext) -> None:
        from fastmesh.naming import Dtab, Path  # lazy: naming is a sibling package

        if values.get("dtab") is None:
            values["dtab"] = DtabConfig(text="", parsed=Dtab.read(""))
        if values.get("dst_prefix") is None:
            values["dst_prefix"] = Path.read("/svc")
        values.setdefault("label", values.get("protocol", "http"))

    def check(self, path: str, ctx: ParseContext) -> None:
        if not self.streaming_enabled and self.is_set("streamAfterContentLengthKB"):
            raise ConfigError(join_path(path, "streamAfterContentLengthKB"),
                              "streamAfterContentLengthKB cannot be set when streamingEnabled "
                              "is false")

    @property
    def server_labels(self) -> tuple[str, ...]:
        """Each server's label (the router label unless the server sets one)."""
        return tuple(s.label or self.label for s in self.servers)


ROUTER_PROTOCOLS = KindFamily(
    "protocol",
    {"http": RouterConfig},
    unsupported=frozenset({"h2", "thrift", "thriftmux", "mux"}),
    tag="protocol",
)
