"""``namers``, ``interpreter`` and ``transformers`` (§2.2, §2.5): where names resolve.

A namer answers names under ``/#`` + its prefix (``/#/io.l5d.k8s/default/http/world``).
The interpreter (only ``default`` here) resolves a router's names through its dtab, the
namers and the ``/$`` built-ins; transformers then rewrite the bound addresses, e.g. the
daemonset transformer swaps each pod address for the fastmesh on that pod's node.

Every kind in linkerd's own docs is parsed with its keys typed. Kinds that linkerd has
but fastmesh cannot run are refused here by name; kinds fastmesh parses but whose
runtime is missing are refused by the runtime when it starts, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, join_path
from .schema import (ConfigNode, KindFamily, ParseContext, as_bool, as_path, as_port, as_str, key,
                     list_of)

__all__ = [
    "TransformerConfig", "DaemonSetTransformerConfig", "LocalNodeTransformerConfig",
    "LocalhostTransformerConfig", "SpecificHostTransformerConfig", "PortTransformerConfig",
    "ReplaceTransformerConfig", "ConstTransformerConfig", "TRANSFORMER_KINDS",
    "NamerConfig", "K8sNamerConfig", "FsNamerConfig", "NAMER_KINDS",
    "InterpreterConfig", "INTERPRETER_KINDS",
]


def _read_path(text: str) -> Any:
    from fastmesh.naming import Path  # lazy: naming is a sibling package

    return Path.read(text)


# --- transformers --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(ConfigNode):
    """A name-tree transformer; ``prefix`` is the ``/%`` id prefix of what it produces."""

    kind: str = key("kind", as_str, required=True, always_emit=True)
    prefix: Any = key("prefix", as_path, None)  # a fastmesh.naming.Path, filled by complete()

    # The default prefix, before the per-kind segments (`/%` is put in front at runtime).
    DEFAULT_PREFIX: Any = None

    @classmethod
    def complete(cls, values: dict[str, Any], path: str, ctx: ParseContext) -> None:
        if values.get("prefix") is None:
            text = cls.default_prefix_text(values)
            try:
                values["prefix"] = _read_path(text)
            except ValueError as exc:  # naming's ParseError; the parts come from other keys
                raise ConfigError(join_path(path, "prefix"),
                                  f"the default prefix {text!r} is not a valid path: {exc}") from exc

    @classmethod
    def default_prefix_text(cls, values: dict[str, Any]) -> str:
        return "/" + cls.__dataclass_fields__["kind"].default


@dataclass(frozen=True, kw_only=True)
class DaemonSetTransformerConfig(TransformerConfig):
    """``io.l5d.k8s.daemonset``: send to the fastmesh (port ``port`` of Service ``service``
    in ``namespace``) on the destination's node: same /24, or same node name."""

    kind: str = key("kind", as_str, "io.l5d.k8s.daemonset", always_emit=True)
    namespace: str = key("namespace", as_str, required=True)
    service: str = key("service", as_str, required=True)
    port: str = key("port", as_str, required=True)  # a port *name* on the Service
    host_network: bool = key("hostNetwork", as_bool, False)
    k8s_host: str = key("k8sHost", as_str, "localhost")
    k8s_port: int = key("k8sPort", as_port, 8001)

    @classmethod
    def default_prefix_text(cls, values: dict[str, Any]) -> str:
        return f"/io.l5d.k8s.daemonset/{values['namespace']}/{values['port']}/{values['service']}"


@dataclass(frozen=True, kw_only=True)
class LocalNodeTransformerConfig(TransformerConfig):
    """``io.l5d.k8s.localnode``: keep only endpoints on this node (POD_IP's /24, or
    NODE_NAME with ``hostNetwork``). The env var is read by the runtime, not here."""

    kind: str = key("kind", as_str, "io.l5d.k8s.localnode", always_emit=True)
    host_network: bool = key("hostNetwork", as_bool, False)


@dataclass(frozen=True, kw_only=True)
class LocalhostTransformerConfig(TransformerConfig):
    """``io.l5d.localhost``: keep endpoints whose address is this host's."""

    kind: str = key("kind", as_str, "io.l5d.localhost", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class SpecificHostTransformerConfig(TransformerConfig):
    """``io.l5d.specificHost``: keep endpoints whose address is ``host``."""

    kind: str = key("kind", as_str, "io.l5d.specificHost", always_emit=True)
    host: str = key("host", as_str, required=True)


@dataclass(frozen=True, kw_only=True)
class PortTransformerConfig(TransformerConfig):
    """``io.l5d.port``: replace every endpoint's port with ``port``."""

    kind: str = key("kind", as_str, "io.l5d.port", always_emit=True)
    port: int = key("port", as_port, required=True)


@dataclass(frozen=True, kw_only=True)
class ReplaceTransformerConfig(TransformerConfig):
    """``io.l5d.replace``: replace each bound name with ``path`` (Neg stays Neg)."""

    kind: str = key("kind", as_str, "io.l5d.replace", always_emit=True)
    path: Any = key("path", as_path, required=True)


@dataclass(frozen=True, kw_only=True)
class ConstTransformerConfig(TransformerConfig):
    """``io.l5d.const``: every lookup answers ``path``."""

    kind: str = key("kind", as_str, "io.l5d.const", always_emit=True)
    path: Any = key("path", as_path, required=True)


TRANSFORMER_KINDS = KindFamily("transformer kind", {
    "io.l5d.k8s.daemonset": DaemonSetTransformerConfig,
    "io.l5d.k8s.localnode": LocalNodeTransformerConfig,
    "io.l5d.localhost": LocalhostTransformerConfig,
    "io.l5d.specificHost": SpecificHostTransformerConfig,
    "io.l5d.port": PortTransformerConfig,
    "io.l5d.replace": ReplaceTransformerConfig,
    "io.l5d.const": ConstTransformerConfig,
})


# --- namers --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NamerConfig(ConfigNode):
    """One ``namers`` entry: answers names under ``/#`` + ``prefix``."""

    kind: str = key("kind", as_str, required=True, always_emit=True)
    prefix: Any = key("prefix", as_path, None)  # a fastmesh.naming.Path, filled by complete()
    experimental: bool = key("experimental", as_bool, False)
    transformers: tuple[TransformerConfig, ...] = key("transformers", list_of(TRANSFORMER_KINDS), ())

    @classmethod
    def complete(cls, values: dict[str, Any], path: str, ctx: ParseContext) -> None:
        if values.get("prefix") is None:
            values["prefix"] = _read_path("/" + cls.__dataclass_fields__["kind"].default)


@dataclass(frozen=True, kw_only=True)
class K8sNamerConfig(NamerConfig):
    """``io.l5d.k8s``: ``/<namespace>/<port>/<service>`` from the Kubernetes API
    (plain HTTP to ``host:port``, normally a ``kubectl proxy`` sidecar)."""

    kind: str = key("kind", as_str, "io.l5d.k8s", always_emit=True)
    host: str = key("host", as_str, "localhost")
    port: int = key("port", as_port, 8001)
    label_selector: str | None = key("labelSelector", as_str, None)


@dataclass(frozen=True, kw_only=True)
class FsNamerConfig(NamerConfig):
    """``io.l5d.fs``: one file per service under ``rootDir``, ``host port`` per line."""

    kind: str = key("kind", as_str, "io.l5d.fs", always_emit=True)
    root_dir: str = key("rootDir", as_str, required=True)


NAMER_KINDS = KindFamily(
    "namer kind",
    {"io.l5d.k8s": K8sNamerConfig, "io.l5d.fs": FsNamerConfig},
    unsupported=frozenset({
        "io.l5d.consul", "io.l5d.marathon", "io.l5d.serversets", "io.l5d.zkLeader",
        "io.l5d.curator", "io.l5d.dnssrv", "io.l5d.rancher", "io.l5d.k8s.external",
        "io.l5d.k8s.ns", "io.l5d.k8s.istio", "io.l5d.namerd", "io.l5d.namerd.http",
    }),
)


# --- interpreter ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InterpreterConfig(ConfigNode):
    """``interpreter``: ``default`` = router dtab, then namers, then ``/$``; then the
    ``transformers`` in list order."""

    kind: str = key("kind", as_str, "default", always_emit=True)
    transformers: tuple[TransformerConfig, ...] = key("transformers", list_of(TRANSFORMER_KINDS), ())


INTERPRETER_KINDS = KindFamily(
    "interpreter kind",
    {"default": InterpreterConfig},
    unsupported=frozenset({"io.l5d.namerd", "io.l5d.namerd.http", "io.l5d.mesh", "io.l5d.fs",
                           "io.l5d.k8s.configMap"}),
    default="default",
)
