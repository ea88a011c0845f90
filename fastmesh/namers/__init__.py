"""Namer registry: build configured namers from their config entries (spec §2.2).

Role: at start-up the router turns each ``namers:`` entry into a namer object the
interpreter consults for ``/#/<prefix>/...`` names. ``build_namer(kind, params)`` checks
the keys like linkerd's strict config reader (an unknown key is an error) and raises
:class:`~fastmesh.errors.NotSupportedError` for kinds fastmesh does not implement yet.
A namer with ``transformers`` gets them applied to every fully bound answer.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from fastmesh.errors import NotSupportedError
from fastmesh.naming.addr import BoundName, Closable
from fastmesh.naming.namer import PENDING
from fastmesh.naming.nametree import Alt, Leaf, NameTree, Union
from fastmesh.naming.path import ParseError, Path
from fastmesh.naming.transformers import Transformer, build_transformer

from .fs import FsNamer
from .k8s import K8sNamer

# Namer kinds linkerd 1.x knows that fastmesh does not implement (yet).
_UNSUPPORTED_KINDS = {
    "io.l5d.k8s.external": "",
    "io.l5d.k8s.ns": "",
    "io.l5d.k8s.istio": "",
    "io.l5d.consul": "",
    "io.l5d.marathon": "",
    "io.l5d.zk": "",
    "io.l5d.serversets": "",
    "io.l5d.zkLeader": "",
    "io.l5d.curator": "",
    "io.l5d.dnssrv": "",
    "io.l5d.rewrite": "",
    "io.l5d.namerd": "",
}

_COMMON_KEYS = {"kind", "prefix", "experimental", "transformers"}


class TransformingNamer:
    """A namer whose bound answers pass through namer-level transformers (spec §5.4)."""

    def __init__(self, underlying: Any, transformers: Sequence[Transformer]):
        self.underlying = underlying
        self.transformers = tuple(transformers)
        self.prefix = underlying.prefix
        self.kind = getattr(underlying, "kind", "")

    def lookup(self, path: Path):
        tree = self.underlying.lookup(path)
        if tree is PENDING or not _fully_bound(tree):
            return tree
        for t in self.transformers:
            tree = t.transform(tree)
        return tree

    def add_listener(self, callback: Callable[[], None]) -> Closable:
        return self.underlying.add_listener(callback)

    def start(self, loop=None) -> None:
        self.underlying.start(loop)
        for t in self.transformers:  # the daemonset transformer runs its own watch
            start = getattr(t, "start", None)
            if start is not None:
                start(loop)

    def close(self) -> None:
        self.underlying.close()
        for t in self.transformers:
            close = getattr(t, "close", None)
            if close is not None:
                close()

    def __getattr__(self, name: str):
        # start/close/load_now/names/state of the wrapped namer
        return getattr(self.underlying, name)


def _fully_bound(tree: NameTree) -> bool:
    if isinstance(tree, Leaf):
        return isinstance(tree.value, BoundName)
    if isinstance(tree, Alt):
        return all(_fully_bound(t) for t in tree.trees)
    if isinstance(tree, Union):
        return all(_fully_bound(w.tree) for w in tree.weighted)
    return True


def _prefix(kind: str, params: Mapping[str, Any], default: Path) -> Path:
    value = params.get("prefix")
    if value is None:
        return default
    if isinstance(value, Path):
        return value
    try:
        return Path.read(str(value))
    except ParseError as exc:
        raise ValueError(f"{kind}: invalid prefix: {exc}") from None


def build_namer(kind: str, params: Mapping[str, Any] | None = None) -> Any:
    """A namer from its config entry. ``io.l5d.fs`` is scanned once before returning,
    so the first request never sees it pending; call ``start(loop)`` to keep watching.
    ``io.l5d.k8s`` does no I/O until ``start(loop)``; it answers pending until then."""
    params = dict(params or {})
    if kind in _UNSUPPORTED_KINDS:
        why = _UNSUPPORTED_KINDS[kind]
        raise NotSupportedError(f"{kind} is not supported yet" + (f" ({why})" if why else ""))
    if kind == "io.l5d.fs":
        for key in params:
            if key not in _COMMON_KEYS | {"rootDir"}:
                raise ValueError(f"{kind}: unknown key '{key}'")
        root = params.get("rootDir")
        if root is None:
            raise ValueError(f"{kind}: 'rootDir' is required")
        root = str(root)
        if not os.path.isdir(root):
            raise ValueError(f"{kind}: rootDir {root} is not a directory")
        namer: Any = FsNamer(root, _prefix(kind, params, Path.utf8("io.l5d.fs")))
        namer.load_now()
    elif kind == "io.l5d.k8s":
        namer = _build_k8s(kind, params)
    else:
        raise ValueError(f"unknown namer kind: {kind}")
    transformers = params.get("transformers") or ()
    if transformers:
        built = []
        for entry in transformers:
            if not isinstance(entry, Mapping) or "kind" not in entry:
                raise ValueError(f"{kind}: each transformer needs a 'kind'")
            built.append(build_transformer(str(entry["kind"]), entry))
        namer = TransformingNamer(namer, built)
    return namer


def _build_k8s(kind: str, params: Mapping[str, Any]) -> K8sNamer:
    for key in params:
        if key not in _COMMON_KEYS | {"host", "port", "labelSelector"}:
            raise ValueError(f"{kind}: unknown key '{key}'")
    host = params.get("host")
    host = "localhost" if host is None else str(host)
    if not host:
        raise ValueError(f"{kind}: host must not be empty")
    port = params.get("port", 8001)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ValueError(f"{kind}: port must be an integer in 1..65535, got {port!r}")
    selector = params.get("labelSelector")
    if selector is not None:
        selector = str(selector)
        if not selector or "=" in selector or "," in selector:
            raise ValueError(f"{kind}: labelSelector is the name of one label, got {selector!r}")
    return K8sNamer(host, port, _prefix(kind, params, Path.utf8("io.l5d.k8s")), selector)


__all__ = ["FsNamer", "K8sNamer", "TransformingNamer", "build_namer"]
