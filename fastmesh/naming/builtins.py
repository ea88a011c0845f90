"""The built-in ``/$`` names (finagle ``Namer.global`` and linkerd's rewriting namers).

Role in the data path: static routing needs no namer entry: ``/svc/* => /$/inet/127.1/8080``
binds straight to an address. Consulted last, after the dtab and the configured namers
(spec §3.7):

* ``/$/inet/<host>/<port>[/residual]`` and ``/$/fixedinet/...`` → a bound name with id
  ``/$/inet/<host>/<port>``; ``/$/inet/<port>`` → localhost. IPv4 short forms are
  normalised (``127.1`` → 127.0.0.1); DNS names are kept for the connector to resolve,
  so nothing here blocks.
* ``/$/fail/...`` → Fail, ``/$/nil/...`` → Empty.
* ``/$/io.buoyant.rinet/<port>/<host>``, ``/$/io.buoyant.hostportPfx``,
  ``/$/io.buoyant.porthostPfx`` and the ``io.buoyant.http.*`` rewriters.
* any other ``/$/<kind>`` fails like linkerd's missing class:
  ``Unknown namer: <kind> for path: <path>``.
"""

from __future__ import annotations

import re
from typing import Callable

from .addr import Address, AddrBound, AddrFailed, AddrVar, BoundName, normalize_host
from .nametree import Empty, Fail, Leaf, NameTree, Neg
from .path import Path

DOLLAR = b"$"
_INT = re.compile(r"[+-]?[0-9]+")
_INT32 = (-(2**31), 2**31 - 1)


class UnknownNamerError(Exception):
    """``/$/<kind>`` names a namer that does not exist (linkerd's UnknownNamer)."""


class BuiltinError(Exception):
    """A rewriting namer could not build its result (e.g. an empty label)."""


def java_int(text: str) -> int | None:
    """``String.toInt``: optional sign, decimal digits, 32-bit range; else None."""
    if not _INT.fullmatch(text):
        return None
    value = int(text)
    if not _INT32[0] <= value <= _INT32[1]:
        return None
    return value


def java_split(text: str, sep: str) -> list[str]:
    """Java's ``String.split`` for a literal separator: trailing empty strings removed."""
    if text == "":
        return [""]
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _utf8_path(*labels: str) -> Path:
    try:
        return Path.utf8(*labels)
    except ValueError as exc:
        raise BuiltinError(f"requirement failed: {exc}") from None


# --- inet -------------------------------------------------------------------------------------

# One AddrVar per (host, port): an inet name is constant, and sharing keeps ids stable.
_inet_vars: dict[tuple[str, int], AddrVar] = {}


def inet_addr_var(host: str, port: int) -> AddrVar:
    key = (host, port)
    var = _inet_vars.get(key)
    if var is None:
        if not 0 <= port <= 65535:
            var = AddrVar(AddrFailed(f"port out of range:{port}"))
        else:
            # An empty host means localhost (Java's InetSocketAddress("", port)).
            var = AddrVar(AddrBound.of(Address(normalize_host(host) if host else "127.0.0.1", port)))
        if len(_inet_vars) > 10000:
            _inet_vars.clear()  # bound the memo; callers keep their own references
        _inet_vars[key] = var
    return var


def _inet(path: Path) -> NameTree | None:
    """``/$/inet|fixedinet/host/port/...`` or ``/$/inet|fixedinet/port/...``; else None."""
    labels = path.utf8_labels()
    if len(labels) < 3 or labels[1] not in ("inet", "fixedinet"):
        return None
    if len(labels) >= 4:
        port = java_int(labels[3])
        if port is not None:
            bound = BoundName(path.take(4), inet_addr_var(labels[2], port), path.drop(4))
            return Leaf(bound)
    port = java_int(labels[2])
    if port is not None:
        return Leaf(BoundName(path.take(3), inet_addr_var("", port), path.drop(3)))
    return None


# --- rewriting namers (linkerd io.buoyant.*) ------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9][-a-z0-9]*[a-z0-9]?")
_HOST = re.compile(r"[A-Za-z0-9.:_-]+")
_METHOD = re.compile(r"[A-Z]+")


def _host_colon_port(text: str) -> tuple[str, str] | None:
    parts = java_split(text, ":")
    if len(parts) == 2 and _DNS_LABEL.fullmatch(parts[1]) and len(parts[1]) <= 63:
        return parts[0], parts[1]
    return None


def _drop_port(hostname: str) -> str:
    idx = hostname.find(":")
    return hostname[:idx] if idx > 0 else hostname


def _subdomain(domain: str, hostname: str) -> str | None:
    suffix = "." + domain
    host = _drop_port(hostname)
    if host.endswith(suffix):
        return host[: -len(suffix)]
    return None


def _exactly(path: Path, n: int) -> tuple[str, ...] | None:
    """The first ``n`` labels as strings, if the path has at least ``n``."""
    if len(path) < n:
        return None
    return path.take(n).utf8_labels()


def _hostport_pfx(rest: Path) -> Path | None:
    head = _exactly(rest, 2)
    if head is None:
        return None
    hp = _host_colon_port(head[1])
    if hp is None:
        return None
    return _utf8_path(head[0], hp[0], hp[1]) + rest.drop(2)


def _porthost_pfx(rest: Path) -> Path | None:
    head = _exactly(rest, 2)
    if head is None:
        return None
    hp = _host_colon_port(head[1])
    if hp is None:
        return None
    return _utf8_path(head[0], hp[1], hp[0]) + rest.drop(2)


def _any_method(rest: Path) -> Path | None:
    head = _exactly(rest, 1)
    if head is None or not _METHOD.fullmatch(head[0]):
        return None
    return rest.drop(1)


def _any_method_pfx(rest: Path) -> Path | None:
    head = _exactly(rest, 2)
    if head is None or not _METHOD.fullmatch(head[1]):
        return None
    return _utf8_path(head[0]) + rest.drop(2)


def _any_host(rest: Path) -> Path | None:
    head = _exactly(rest, 1)
    if head is None or not _HOST.fullmatch(head[0]):
        return None
    return rest.drop(1)


def _any_host_pfx(rest: Path) -> Path | None:
    head = _exactly(rest, 2)
    if head is None or not _HOST.fullmatch(head[1]):
        return None
    return _utf8_path(head[0]) + rest.drop(2)


def _subdomain_of(rest: Path) -> Path | None:
    head = _exactly(rest, 2)
    if head is None or not (_HOST.fullmatch(head[0]) and _HOST.fullmatch(head[1])):
        return None
    sub = _subdomain(head[0], head[1])
    if not sub:
        return None
    return _utf8_path(sub) + rest.drop(2)


def _subdomain_of_pfx(rest: Path) -> Path | None:
    head = _exactly(rest, 3)
    if head is None or not (_HOST.fullmatch(head[0]) and _HOST.fullmatch(head[2])):
        return None
    sub = _subdomain(head[0], head[2])
    if not sub:
        return None
    return _utf8_path(head[1], sub) + rest.drop(3)


def _domain_to_path(rest: Path) -> Path | None:
    head = _exactly(rest, 1)
    if head is None or not _HOST.fullmatch(head[0]):
        return None
    return _utf8_path(*reversed(java_split(head[0], "."))) + rest.drop(1)


def _domain_to_path_pfx(rest: Path) -> Path | None:
    head = _exactly(rest, 2)
    if head is None or not _HOST.fullmatch(head[1]):
        return None
    return _utf8_path(head[0], *reversed(java_split(head[1], "."))) + rest.drop(2)


_REWRITERS: dict[str, Callable[[Path], Path | None]] = {
    "io.buoyant.hostportPfx": _hostport_pfx,
    "io.buoyant.porthostPfx": _porthost_pfx,
    "io.buoyant.http.anyMethod": _any_method,
    "io.buoyant.http.anyMethodPfx": _any_method_pfx,
    "io.buoyant.http.anyHost": _any_host,
    "io.buoyant.http.anyHostPfx": _any_host_pfx,
    "io.buoyant.http.subdomainOf": _subdomain_of,
    "io.buoyant.http.subdomainOfPfx": _subdomain_of_pfx,
    "io.buoyant.http.domainToPath": _domain_to_path,
    "io.buoyant.http.domainToPathPfx": _domain_to_path_pfx,
}


def _rinet(path: Path, rest: Path) -> NameTree:
    head = _exactly(rest, 2)
    if head is None:
        return Neg
    port_text, host = head
    port = java_int(port_text)
    ident = path.take(len(path) - len(rest) + 2)
    if port is None:
        var = AddrVar(AddrFailed(f"invalid port: {port_text}"))
    else:
        var = inet_addr_var(host, port)
    return Leaf(BoundName(ident, var, rest.drop(2)))


SUPPORTED_KINDS = ("inet", "fixedinet", "fail", "nil", "io.buoyant.rinet", *_REWRITERS)


def lookup_builtin(path: Path) -> NameTree:
    """Resolve a ``/$`` path: a tree (Neg when not a ``/$`` name).

    Raises :class:`UnknownNamerError` for an unknown ``/$/<kind>`` and
    :class:`BuiltinError` when a rewriter cannot build its result.
    """
    if not path.labels or path.labels[0] != DOLLAR:
        return Neg
    inet = _inet(path)
    if inet is not None:
        return inet
    if len(path) < 2:
        return Neg
    kind = path.labels[1].decode("utf-8", "replace")
    if kind == "fail":
        return Fail
    if kind == "nil":
        return Empty
    rest = path.drop(2)
    if kind == "io.buoyant.rinet":
        return _rinet(path, rest)
    rewriter = _REWRITERS.get(kind)
    if rewriter is None:
        raise UnknownNamerError(f"Unknown namer: {kind} for path: {path.show}")
    if rest.is_empty:
        return Neg
    rewritten = rewriter(rest)
    return Neg if rewritten is None else Leaf(rewritten)
