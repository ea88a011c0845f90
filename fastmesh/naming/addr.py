"""Addresses, address states, observable address holders and bound names.

Role in the data path: a bound name (``BoundName``) is what the route cache stores for a
service: its id (the client key, e.g. ``/#/io.l5d.fs/web``), its residual path, and an
``AddrVar`` holding the current endpoint set. Namers update the AddrVar *in place* when
only endpoints change (linkerd's "stabilised existence", spec §5.1), so cached routes keep
their clients and connection pools; the balancer observes the AddrVar.

Address states (finagle ``Addr``): ``AddrBound(addresses, meta)``, ``AddrNeg`` (nothing
there), ``AddrFailed(cause)``, ``AddrPending`` (not known yet).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .path import Path

# --- metadata ------------------------------------------------------------------------------


class Meta(Mapping[str, str]):
    """An immutable, hashable string mapping (address and address-set metadata)."""

    __slots__ = ("_items", "_dict", "_hash")

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()):
        pairs = dict(items.items() if isinstance(items, Mapping) else items)
        object.__setattr__(self, "_dict", pairs)
        object.__setattr__(self, "_items", tuple(sorted(pairs.items())))
        object.__setattr__(self, "_hash", hash(self._items))

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Meta):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __setattr__(self, name, value):
        raise AttributeError("Meta is immutable")

    def __repr__(self) -> str:
        return f"Meta({self._dict!r})"


EMPTY_META = Meta()


def _as_meta(value: Mapping[str, Any] | None) -> Meta:
    if value is None:
        return EMPTY_META
    if isinstance(value, Meta):
        return value
    return Meta(value)


# --- one endpoint --------------------------------------------------------------------------

_IPV4_SHORT = re.compile(r"[0-9]+(\.[0-9]+){0,3}")


def normalize_host(host: str) -> str:
    """Canonical text for an IP literal; names stay as written.

    IPv4 literals may be in Java's short forms (``127.1`` = 127.0.0.1, ``10.1.2`` =
    10.1.0.2, ``2130706433`` = 127.0.0.1): the last part fills the remaining bytes.
    Parts are decimal (Java does not read octal or hex here).
    """
    if _IPV4_SHORT.fullmatch(host):
        parts = [int(p) for p in host.split(".")]
        last_bytes = 5 - len(parts)  # bytes covered by the last part
        if all(p <= 255 for p in parts[:-1]) and parts[-1] < (1 << (8 * last_bytes)):
            value = 0
            for p in parts[:-1]:
                value = (value << 8) | p
            value = (value << (8 * last_bytes)) | parts[-1]
            return str(ipaddress.IPv4Address(value))
        return host
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return host
    return host


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a literal host, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Address:
    """One endpoint: host (an IP literal or a DNS name the connector resolves), port, meta."""

    host: str
    port: int
    meta: Meta = field(default=EMPTY_META)

    def __post_init__(self):
        if not isinstance(self.meta, Meta):
            object.__setattr__(self, "meta", _as_meta(self.meta))

    @property
    def weight(self) -> float:
        """The load-balancer weight (``* w`` in fs files), 1.0 when unset."""
        try:
            return float(self.meta.get("weight", 1.0))
        except ValueError:
            return 1.0

    @property
    def node_name(self) -> str | None:
        return self.meta.get("nodeName")

    @property
    def is_ip(self) -> bool:
        return ip_of(self.host) is not None

    @property
    def show(self) -> str:
        """``host:port`` as linkerd's error texts print it (IPv6 in brackets)."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def with_port(self, port: int) -> "Address":
        return Address(self.host, port, self.meta)


# --- address states ------------------------------------------------------------------------


class Addr:
    """Base of the address states."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AddrBound(Addr):
    addresses: frozenset[Address]
    meta: Meta = field(default=EMPTY_META)

    def __post_init__(self):
        if not isinstance(self.addresses, frozenset):
            object.__setattr__(self, "addresses", frozenset(self.addresses))
        if not isinstance(self.meta, Meta):
            object.__setattr__(self, "meta", _as_meta(self.meta))

    @staticmethod
    def of(*addresses: Address, meta: Mapping[str, Any] | None = None) -> "AddrBound":
        return AddrBound(frozenset(addresses), _as_meta(meta))


@dataclass(frozen=True, slots=True)
class AddrFailed(Addr):
    cause: str


class _AddrAtom(Addr):
    __slots__ = ("_name",)

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self):
        return self._name


AddrNeg = _AddrAtom("AddrNeg")
AddrPending = _AddrAtom("AddrPending")


# --- observables ---------------------------------------------------------------------------


class Closable:
    """A handle whose ``close()`` undoes a registration (idempotent)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], None] | None = None):
        self._fn = fn

    def close(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AddrVar:
    """A mutable holder of an address state that tells observers when it changes."""

    __slots__ = ("_value", "_observers", "__weakref__")

    def __init__(self, value: Addr = AddrPending):
        self._value = value
        self._observers: list[Callable[[Addr], None]] = []

    @property
    def value(self) -> Addr:
        return self._value

    def set(self, addr: Addr) -> None:
        """Replace the state; observers run only if it differs from the current one."""
        if addr == self._value:
            return
        self._value = addr
        self._notify(addr)

    def _notify(self, addr: Addr) -> None:
        for cb in list(self._observers):
            cb(addr)

    def observe(self, callback: Callable[[Addr], None], *, initial: bool = False) -> Closable:
        """Call ``callback(addr)`` on every change (and now too when ``initial``)."""
        self._observers.append(callback)
        self._on_first_observer()
        if initial:
            callback(self.value)

        def remove() -> None:
            try:
                self._observers.remove(callback)
            except ValueError:
                return
            if not self._observers:
                self._on_last_observer()

        return Closable(remove)

    @property
    def observed(self) -> bool:
        return bool(self._observers)

    def _on_first_observer(self) -> None:
        pass

    def _on_last_observer(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class DerivedAddrVar(AddrVar):
    """An AddrVar computed from other AddrVars (used by transformers).

    It follows its sources only while someone observes it, so a derived var that the
    route cache dropped leaves no subscription behind.
    """

    __slots__ = ("_sources", "_fn", "_subscriptions")

    def __init__(self, sources: Sequence[AddrVar], fn: Callable[..., Addr]):
        super().__init__(AddrPending)
        self._sources = tuple(sources)
        self._fn = fn
        self._subscriptions: list[Closable] = []

    @property
    def sources(self) -> tuple[AddrVar, ...]:
        return self._sources

    def _compute(self) -> Addr:
        return self._fn(*(s.value for s in self._sources))

    @property
    def value(self) -> Addr:
        if self._subscriptions:
            return self._value
        return self._compute()

    def set(self, addr: Addr) -> None:
        raise TypeError("a derived AddrVar follows its sources and cannot be set")

    def _recompute(self, _changed: Addr) -> None:
        new = self._compute()
        if new != self._value:
            self._value = new
            self._notify(new)

    def _on_first_observer(self) -> None:
        if not self._subscriptions:
            self._value = self._compute()
            self._subscriptions = [s.observe(self._recompute) for s in self._sources]

    def _on_last_observer(self) -> None:
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            sub.close()


def const_var(addr: Addr) -> AddrVar:
    return AddrVar(addr)


# --- bound names ---------------------------------------------------------------------------


class BoundName:
    """A name bound to an address holder: ``id`` (client key), ``addr``, ``residual``.

    Equality and hash use (id, residual): two lookups of the same file or service give
    equal names even though each carries the namer's one shared AddrVar.
    """

    __slots__ = ("id", "addr", "residual", "_hash")

    def __init__(self, id: Path, addr: AddrVar, residual: Path = Path.empty):
        self.id = id
        self.addr = addr
        self.residual = residual
        self._hash = hash((id, residual))

    @property
    def id_show(self) -> str:
        return self.id.show

    @property
    def show(self) -> str:
        return self.id.show

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BoundName):
            return NotImplemented
        return self.id == other.id and self.residual == other.residual

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        res = "" if self.residual.is_empty else f", residual={self.residual.show}"
        return f"BoundName({self.id.show}{res})"
