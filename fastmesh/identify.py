"""HTTP identifiers: name a request (``/svc/world``) from its head (spec §4).

Role in the data path: the first thing the router does with a parsed request head is
name it; the name plus the local dtab is the route-cache key. The Cython core builds
that key without calling Python, using each identifier's ``key_spec`` (which request
parts the answer depends on); Python ``identify`` runs on a cache miss and for tests.

Kinds (``identifier:`` in a router, one object or a list tried in order):

* ``io.l5d.header.token`` (default, header ``Host``): the header value as ONE label;
  no port stripping, no case folding. Missing/empty → "<header> header is absent".
* ``io.l5d.methodAndHost`` (``httpUriInDst``): ``/1.1/<METHOD>/<host lowercased>`` or
  ``/1.0/<METHOD>``, plus the URI path when ``httpUriInDst``.
* ``io.l5d.path`` (``segments``, ``consume``): the first N path segments; ``consume``
  rewrites the URI to the rest, keeping a trailing ``/`` and the query.
* ``io.l5d.header`` (``header``, default ``l5d-name``): the value parsed as a path.
* ``io.l5d.static`` (``path``): always that path.

Every name is ``dstPrefix ++ <what the identifier found>``. A value that cannot become a
path makes the identifier fail (``Unidentified`` with ``invalid=True``); callers answer
400 either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fastmesh.errors import NotSupportedError
from fastmesh.naming.path import ParseError, Path

# --- request and answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    """The parts of a request head identifiers look at (URI already origin-form)."""

    method: str
    uri: str
    version: str  # "1.1", "1.0" or "HTTP/1.1"
    headers: Sequence[tuple[str, str]] = ()

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def http_version(self) -> str:
        v = self.version
        return v[5:] if v.upper().startswith("HTTP/") else v

    @property
    def path(self) -> str:
        """The URI up to the first ``?`` (finagle ``Request.path``; no decoding)."""
        return self.uri.split("?", 1)[0]


@dataclass(frozen=True)
class Identified:
    path: Path
    uri: str | None = None  # the rewritten URI when the identifier consumes segments


@dataclass(frozen=True)
class Unidentified:
    reason: str
    invalid: bool = False  # True when the identifier *threw* (a value that is not a path)


IdentifyResult = Identified | Unidentified


def java_split(text: str, sep: str) -> list[str]:
    """Java's ``String.split`` with a literal separator (trailing empty strings dropped)."""
    if text == "":
        return [""]
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


# --- identifiers ----------------------------------------------------------------------------------


class Identifier:
    kind: str = ""
    key_spec: tuple = ()

    def identify(self, req: RequestInfo) -> IdentifyResult:
        raise NotImplementedError


class HeaderTokenIdentifier(Identifier):
    kind = "io.l5d.header.token"

    def __init__(self, dst_prefix: Path, header: str = "Host"):
        self.dst_prefix = dst_prefix
        self.header = header
        self.key_spec = ("header", header.lower())

    def identify(self, req: RequestInfo) -> IdentifyResult:
        value = req.header(self.header)
        if not value:
            return Unidentified(f"{self.header} header is absent")
        # The whole value is one label, whatever bytes it holds ('/' included).
        return Identified(self.dst_prefix + Path(value.encode("utf-8")))


class MethodAndHostIdentifier(Identifier):
    kind = "io.l5d.methodAndHost"

    def __init__(self, dst_prefix: Path, http_uri_in_dst: bool = False):
        self.dst_prefix = dst_prefix
        self.http_uri_in_dst = http_uri_in_dst
        self.key_spec = ("method_host", http_uri_in_dst)

    def _suffix(self, req: RequestInfo) -> Path:
        return Path.read(req.path) if self.http_uri_in_dst else Path.empty

    def identify(self, req: RequestInfo) -> IdentifyResult:
        version = req.http_version
        try:
            if version == "1.0":
                return Identified(self.dst_prefix + Path.utf8("1.0", req.method) + self._suffix(req))
            if version == "1.1":
                host = req.header("Host")
                if not host:
                    return Unidentified("HTTP/1.1 request missing hostname")
                return Identified(self.dst_prefix + Path.utf8("1.1", req.method, host.lower()) + self._suffix(req))
        except (ParseError, ValueError) as exc:
            return Unidentified(f"not a valid path: {exc}", invalid=True)
        return Unidentified(f"Unknown HTTP version HTTP/{version}")


class PathIdentifier(Identifier):
    kind = "io.l5d.path"

    def __init__(self, dst_prefix: Path, segments: int = 1, consume: bool = False):
        self.dst_prefix = dst_prefix
        self.segments = segments
        self.consume = consume
        self.key_spec = ("path", segments, consume)

    def identify(self, req: RequestInfo) -> IdentifyResult:
        request_path = req.path
        elems = java_split(request_path, "/")[1:]
        if len(elems) < self.segments:
            return Unidentified("not enough segments in path")
        taken = elems[: self.segments]
        if any(e == "" for e in taken):
            # An empty segment cannot be a label (linkerd throws building the name).
            return Unidentified(f"not a valid path: empty segment in {request_path}", invalid=True)
        name = self.dst_prefix + Path.utf8(*taken)
        if not self.consume:
            return Identified(name)
        return Identified(name, self._rest_uri(req.uri))

    def _rest_uri(self, uri: str) -> str:
        path, sep, query = uri.partition("?")
        rest = path.split("/")[1 + self.segments:]  # keeps a trailing "" → trailing '/'
        new_path = "/" + "/".join(rest)
        return new_path + sep + query


class HeaderPathIdentifier(Identifier):
    kind = "io.l5d.header"

    def __init__(self, dst_prefix: Path, header: str = "l5d-name"):
        self.dst_prefix = dst_prefix
        self.header = header
        self.key_spec = ("header_path", header.lower())

    def identify(self, req: RequestInfo) -> IdentifyResult:
        value = req.header(self.header)
        if not value:
            return Unidentified(f"{self.header} header is absent")
        try:
            return Identified(self.dst_prefix + Path.read(value))
        except ParseError as exc:
            return Unidentified(f"not a valid path: {exc}", invalid=True)


class StaticIdentifier(Identifier):
    kind = "io.l5d.static"

    def __init__(self, dst_prefix: Path, path: Path):
        self.dst_prefix = dst_prefix
        self.path = path
        self.name = dst_prefix + path
        self.key_spec = ("static",)

    def identify(self, req: RequestInfo) -> IdentifyResult:
        return Identified(self.name)


class IdentifierList(Identifier):
    """Try each in order; the first that identifies wins, else the last one's reason.

    An identifier that fails on an invalid value stops the search (linkerd's failed
    Future), and the request gets a 400.
    """

    kind = "list"

    def __init__(self, identifiers: Sequence[Identifier]):
        if not identifiers:
            raise ValueError("an identifier list needs at least one identifier")
        self.identifiers = tuple(identifiers)
        self.key_spec = ("list", tuple(i.key_spec for i in self.identifiers))

    def identify(self, req: RequestInfo) -> IdentifyResult:
        result: IdentifyResult = Unidentified("no identifier")
        for identifier in self.identifiers:
            result = identifier.identify(req)
            if isinstance(result, Identified) or result.invalid:
                return result
        return result


# --- construction -----------------------------------------------------------------------------------

_KEYS = {
    "io.l5d.header.token": {"header"},
    "io.l5d.methodAndHost": {"httpUriInDst"},
    "io.l5d.path": {"segments", "consume"},
    "io.l5d.header": {"header"},
    "io.l5d.static": {"path"},
}

_UNSUPPORTED = ("io.l5d.ingress", "io.l5d.k8s.istio", "io.l5d.k8s.ingress", "io.l5d.http.istio")


def _bool(kind: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{kind}: {key} must be true or false, got {value!r}")
    return value


def _build_one(config: Mapping[str, Any], dst_prefix: Path) -> Identifier:
    if not isinstance(config, Mapping):
        raise ValueError(f"an identifier is an object with a 'kind', got {config!r}")
    kind = config.get("kind")
    if kind in _UNSUPPORTED:
        raise NotSupportedError(f"identifier {kind} is not supported yet")
    if kind not in _KEYS:
        raise ValueError(f"unknown identifier kind: {kind}")
    for key in config:
        if key != "kind" and key not in _KEYS[kind]:
            raise ValueError(f"{kind}: unknown key '{key}'")
    if kind == "io.l5d.header.token":
        return HeaderTokenIdentifier(dst_prefix, str(config.get("header") or "Host"))
    if kind == "io.l5d.methodAndHost":
        return MethodAndHostIdentifier(dst_prefix, _bool(kind, "httpUriInDst", config.get("httpUriInDst", False)))
    if kind == "io.l5d.path":
        segments = config.get("segments", 1)
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 0:
            raise ValueError(f"{kind}: segments must be a non-negative integer, got {segments!r}")
        return PathIdentifier(dst_prefix, segments, _bool(kind, "consume", config.get("consume", False)))
    if kind == "io.l5d.header":
        return HeaderPathIdentifier(dst_prefix, str(config.get("header") or "l5d-name"))
    # io.l5d.static
    value = config.get("path")
    if value is None:
        raise ValueError(f"{kind}: 'path' is required")
    if not isinstance(value, Path):
        try:
            value = Path.read(str(value))
        except ParseError as exc:
            raise ValueError(f"{kind}: invalid path: {exc}") from None
    return StaticIdentifier(dst_prefix, value)


def build_identifier(configs: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None, dst_prefix: Path) -> Identifier:
    """The router's identifier from its ``identifier:`` config (None → the default)."""
    if configs is None:
        return HeaderTokenIdentifier(dst_prefix, "Host")
    if isinstance(configs, Mapping):
        return _build_one(configs, dst_prefix)
    built = [_build_one(c, dst_prefix) for c in configs]
    if len(built) == 1:
        return built[0]
    return IdentifierList(built)


__all__ = [
    "HeaderPathIdentifier",
    "HeaderTokenIdentifier",
    "Identified",
    "Identifier",
    "IdentifierList",
    "MethodAndHostIdentifier",
    "PathIdentifier",
    "RequestInfo",
    "StaticIdentifier",
    "Unidentified",
    "build_identifier",
]
