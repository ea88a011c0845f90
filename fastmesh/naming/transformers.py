"""Name-tree transformers: rewrite bound names after binding (spec §2.5, §5.4).

Role in the data path: an interpreter transformer sees the whole bound tree of a route
and rewrites its leaves — it never changes the tree's shape, so an Alt already decided
stays decided. Each transformer puts its id prefix (``/%/<prefix>``) in front of the ids
it produces, so transformed routes get their own clients, and gives each leaf a derived
AddrVar that follows the namer's one (endpoint changes flow through without a re-bind).

Kinds: ``io.l5d.port {port}`` (replace every port), ``io.l5d.localhost`` and
``io.l5d.specificHost {host}`` (keep only addresses of this host / of ``host``),
``io.l5d.replace {path}`` (every bound leaf becomes ``path``'s binding, Neg stays Neg),
``io.l5d.const {path}`` (always ``path``'s binding). ``io.l5d.k8s.daemonset`` and
``io.l5d.k8s.localnode`` live in :mod:`.k8s_transformers` (built from here).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Iterable, Mapping

from fastmesh.errors import NotSupportedError

from .addr import Addr, Address, AddrBound, AddrNeg, BoundName, DerivedAddrVar, ip_of, normalize_host
from .dtab import Dtab
from .nametree import Empty, Fail, Leaf, NameTree, Neg, Union, Weighted
from .path import ParseError, Path

TRANSFORMER_LABEL = b"%"


def transformer_prefix(prefix: Path) -> Path:
    """The id prefix: ``/%`` followed by the configured (or default) prefix."""
    return Path(TRANSFORMER_LABEL, *prefix.labels)


class Transformer:
    """Base: maps every bound leaf; subclasses say how (``map_bound``)."""

    kind: str = ""
    name: str = "NameTreeTransformer"  # the class name linkerd's delegator JSON shows
    delegating: bool = True  # can show per-leaf transformations in a delegation

    def __init__(self, prefix: Path):
        self.prefix = prefix  # full id prefix, starting with /%

    def map_bound(self, bound: BoundName) -> BoundName:
        raise NotImplementedError

    def transform(self, tree: NameTree) -> NameTree:
        return tree.map(lambda v: self.map_bound(v) if isinstance(v, BoundName) else v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prefix.show})"


class PortTransformer(Transformer):
    """``io.l5d.port``: send to the same hosts on one fixed port."""

    kind = "io.l5d.port"
    name = "PortTransformer"

    def __init__(self, prefix: Path, port: int):
        super().__init__(prefix)
        self.port = port

    def _map_addr(self, addr: Addr) -> Addr:
        if isinstance(addr, AddrBound):
            return AddrBound(frozenset(a.with_port(self.port) for a in addr.addresses), addr.meta)
        return addr

    def map_bound(self, bound: BoundName) -> BoundName:
        return BoundName(self.prefix + bound.id, DerivedAddrVar((bound.addr,), self._map_addr), bound.residual)


class FilteringTransformer(Transformer):
    """Keep the addresses a predicate accepts; none left → ``AddrNeg`` (spec §5.3)."""

    def predicate(self, address: Address) -> bool:
        raise NotImplementedError

    def _map_addr(self, addr: Addr) -> Addr:
        if isinstance(addr, AddrBound):
            kept = frozenset(a for a in addr.addresses if self.predicate(a))
            if not kept:
                return AddrNeg
            return AddrBound(kept, addr.meta)
        return addr  # pending, failed and neg pass through

    def map_bound(self, bound: BoundName) -> BoundName:
        return BoundName(self.prefix + bound.id, DerivedAddrVar((bound.addr,), self._map_addr), bound.residual)


class SubnetLocalTransformer(FilteringTransformer):
    """Keep addresses in the same subnet as one of ``local_ips`` (a /32 means "equal").

    Only IP-literal addresses can be compared; a DNS-name address never matches (fastmesh
    keeps names unresolved until connect time; linkerd had resolved them already).
    """

    name = "SubnetLocalTransformer"

    def __init__(self, prefix: Path, local_ips: Iterable[str], prefix_len: int = 32, kind: str = ""):
        super().__init__(prefix)
        self.kind = kind
        self.prefix_len = prefix_len
        networks = []
        for ip in local_ips:
            addr = ipaddress.ip_address(ip)
            # The configured mask is an IPv4 one; /32 ("this exact host") maps to /128.
            bits = prefix_len if addr.version == 4 else (128 if prefix_len == 32 else prefix_len + 96)
            networks.append(ipaddress.ip_network(f"{addr}/{bits}", strict=False))
        self.networks = tuple(networks)

    def predicate(self, address: Address) -> bool:
        ip = ip_of(address.host)
        if ip is None:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)


class ReplaceTransformer(Transformer):
    """``io.l5d.replace``: every bound leaf becomes the binding of ``path``."""

    kind = "io.l5d.replace"
    name = "ReplaceTransformer"
    delegating = False  # linkerd cannot show delegations through it (admin answers 501)

    def __init__(self, prefix: Path, path: Path):
        super().__init__(prefix)
        self.path = path
        self._replacement: NameTree | None = None

    def replacement(self) -> NameTree:
        """``path`` bound with only the ``/$`` built-ins, ids rewritten to prefix ++ path."""
        if self._replacement is None:
            from .interpreter import Interpreter, LookupFailed, LookupOk

            state = Interpreter().bind_tree(Dtab.empty, Leaf(self.path))
            if isinstance(state, LookupFailed):
                raise ValueError(state.message)
            if not isinstance(state, LookupOk):
                raise ValueError(f"{self.path.show} did not bind")
            ident = self.prefix + self.path
            self._replacement = state.tree.map(
                lambda b: BoundName(ident, b.addr, b.residual) if isinstance(b, BoundName) else b
            )
        return self._replacement

    def transform(self, tree: NameTree) -> NameTree:
        replacement = self.replacement()

        def replace(t: NameTree) -> NameTree:
            if t is Neg or t is Fail or t is Empty:
                return t
            if isinstance(t, Leaf):
                return replacement
            if isinstance(t, Union):
                return Union(tuple(Weighted(w.weight, replace(w.tree)) for w in t.weighted))
            return t

        return replace(tree).simplified


class ConstTransformer(ReplaceTransformer):
    """``io.l5d.const``: the binding of ``path``, whatever the tree was (even Neg)."""

    kind = "io.l5d.const"
    name = "ConstTransformer"

    def transform(self, tree: NameTree) -> NameTree:
        return self.replacement()


# --- construction ------------------------------------------------------------------------------


def local_ips() -> list[str]:
    """The IP addresses of this host's interfaces (linkerd: every up interface).

    Read from /proc (no subprocess, no sockets): IPv4 local routes in fib_trie and IPv6
    addresses in if_inet6; falls back to resolving the host name.
    """
    ips: set[str] = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as fh:
            last_ip = None
            for line in fh:
                text = line.strip()
                if text.startswith("|--"):
                    last_ip = text[3:].strip()
                elif text.startswith("/32 host LOCAL") and last_ip:
                    ips.add(last_ip)
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as fh:
            for line in fh:
                hexaddr = line.split()[0]
                ips.add(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except (OSError, ValueError, IndexError):
        pass
    if not ips:
        try:
            ips.update(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
        ips.add("127.0.0.1")
    return sorted(ips)


def _check_keys(kind: str, params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed) | {"kind", "prefix"}
    for key in params:
        if key not in allowed:
            raise ValueError(f"{kind}: unknown key '{key}'")


def _require(kind: str, params: Mapping[str, Any], key: str) -> Any:
    if params.get(key) is None:
        raise ValueError(f"{kind}: '{key}' is required")
    return params[key]


def _as_path(kind: str, key: str, value: Any) -> Path:
    if isinstance(value, Path):
        return value
    try:
        return Path.read(str(value))
    except ParseError as exc:
        raise ValueError(f"{kind}: invalid {key}: {exc}") from None


def _prefix(kind: str, params: Mapping[str, Any], default: Path) -> Path:
    value = params.get("prefix")
    return transformer_prefix(default if value is None else _as_path(kind, "prefix", value))


_KNOWN_ELSEWHERE = ("io.l5d.ec2Host",)


def build_transformer(kind: str, params: Mapping[str, Any] | None = None) -> Transformer:
    """A transformer from its config entry (``kind`` plus its keys)."""
    params = dict(params or {})
    if kind == "io.l5d.k8s.daemonset":
        from .k8s_transformers import build_daemonset
        return build_daemonset(params)
    if kind == "io.l5d.k8s.localnode":
        from .k8s_transformers import build_localnode
        return build_localnode(params)
    if kind in _KNOWN_ELSEWHERE:
        raise NotSupportedError(f"{kind} is not supported yet")
    if kind == "io.l5d.port":
        _check_keys(kind, params, ["port"])
        port = _require(kind, params, "port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"{kind}: port must be an integer in 0..65535, got {port!r}")
        return PortTransformer(_prefix(kind, params, Path.utf8("io.l5d.port", str(port))), port)
    if kind == "io.l5d.localhost":
        _check_keys(kind, params, [])
        return SubnetLocalTransformer(_prefix(kind, params, Path.utf8("io.l5d.localhost")), local_ips(), 32, kind)
    if kind == "io.l5d.specificHost":
        _check_keys(kind, params, ["host"])
        host = str(_require(kind, params, "host"))
        literal = normalize_host(host)
        if ip_of(literal) is None:
            try:
                # Config time, not request time: a one-off resolve is fine here.
                literal = socket.gethostbyname(host)
            except OSError as exc:
                raise ValueError(f"{kind}: cannot resolve host {host!r}: {exc}") from None
        return SubnetLocalTransformer(_prefix(kind, params, Path.utf8("io.l5d.specificHost")), [literal], 32, kind)
    if kind in ("io.l5d.replace", "io.l5d.const"):
        _check_keys(kind, params, ["path"])
        path = _as_path(kind, "path", _require(kind, params, "path"))
        cls = ReplaceTransformer if kind == "io.l5d.replace" else ConstTransformer
        default = Path.utf8(kind)
        return cls(_prefix(kind, params, default), path)
    raise ValueError(f"unknown transformer kind: {kind}")


def transform_all(transformers: Iterable[Transformer], tree: NameTree) -> NameTree:
    for t in transformers:
        tree = t.transform(tree)
    return tree


__all__ = [
    "ConstTransformer",
    "FilteringTransformer",
    "PortTransformer",
    "ReplaceTransformer",
    "SubnetLocalTransformer",
    "Transformer",
    "build_transformer",
    "local_ips",
    "transform_all",
    "transformer_prefix",
]
