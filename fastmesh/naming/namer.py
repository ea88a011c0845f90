"""The namer protocol: what a service-discovery source offers to the interpreter.

Role in the data path: on a route-cache miss the interpreter asks namers to resolve
``/#/<prefix>/...`` names. A namer answers from its in-memory state (never blocking on
I/O): a NameTree whose leaves are BoundNames (resolved) or Paths (rewritten names to
resolve further), ``Neg``, or :data:`PENDING` when it cannot answer yet. It calls its
listeners when an answer may have changed shape (neg ↔ bound ↔ pending, or a different
tree) so the router re-binds; endpoint-only changes go through the AddrVar instead.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from .addr import Closable
from .nametree import NameTree
from .path import Path


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"

    def __reduce__(self):
        return "PENDING"


PENDING = _Pending()  # a namer's answer while it has no data yet


@runtime_checkable
class Namer(Protocol):
    prefix: Path  # e.g. /io.l5d.fs: the namer answers /#/io.l5d.fs/...

    def lookup(self, path: Path) -> NameTree | _Pending:
        """Resolve ``path`` (the name with ``/#`` + prefix removed)."""

    def add_listener(self, callback: Callable[[], None]) -> Closable:
        """Call ``callback()`` whenever some answer may have changed shape."""


class Listeners:
    """A small registry of no-argument callbacks (namers embed one)."""

    __slots__ = ("_callbacks",)

    def __init__(self):
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> Closable:
        self._callbacks.append(callback)

        def remove() -> None:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

        return Closable(remove)

    def fire(self) -> None:
        for cb in list(self._callbacks):
            cb()

    def __len__(self) -> int:
        return len(self._callbacks)
