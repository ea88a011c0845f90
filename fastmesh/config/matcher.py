"""Prefix patterns of ``io.l5d.static`` client and service configs (linkerd's PathMatcher).

A pattern such as ``/#/io.l5d.k8s/{ns}/*/{svc}`` is matched, segment by segment, against
the *shown* form of a name (the client id ``/%/io.l5d.k8s.daemonset/.../world`` or the
service name ``/svc/world``):

* a literal segment must equal the name's segment;
* ``*`` matches any one segment;
* ``{var}`` matches any one segment and captures it as ``var``;
* ``{var}:suffix`` matches a segment ``value:suffix`` and captures ``value`` (host:port ids).

The pattern is a prefix: the name may have more segments. Captures are substituted into
``tls.commonName`` (``{var}`` → value). Unlike linkerd, a ``{var}:suffix`` segment does not
end the match early: the segments after it are checked too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .schema import ParseContext, as_str

__all__ = ["PathMatcher", "as_path_matcher", "substitute"]

_CAPTURE_RE = re.compile(r"\{([^{}/]+)\}")
_SEGMENT_RE = re.compile(r"(\*)|\{([^{}/]+)\}(?::(.+))?|(.+)")


@dataclass(frozen=True)
class PathMatcher:
    """A parsed prefix pattern; ``match(name)`` gives the captures or None."""

    text: str
    segments: tuple[tuple[str, str, str], ...]  # (op, name-or-literal, suffix)

    def match(self, name: str) -> dict[str, str] | None:
        """Captures if ``name`` (a shown path, e.g. ``/svc/world``) starts with this pattern."""
        elems = [e for e in name.split("/") if e]
        if len(elems) < len(self.segments):
            return None
        captures: dict[str, str] = {}
        for (op, arg, suffix), elem in zip(self.segments, elems):
            if op == "literal":
                if elem != arg:
                    return None
            elif op == "capture":
                if suffix:
                    value, sep, rest = elem.partition(":")
                    if not sep or rest != suffix:
                        return None
                    captures[arg] = value
                else:
                    captures[arg] = elem
            # op == "any": `*` takes any single segment
        return captures

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(arg for op, arg, _ in self.segments if op == "capture")

    def __str__(self) -> str:
        return self.text


def substitute(pattern: str, captures: dict[str, str]) -> str:
    """Replace each ``{var}`` in ``pattern`` with its captured value (unknown ones stay)."""
    return _CAPTURE_RE.sub(lambda m: captures.get(m.group(1), m.group(0)), pattern)


def as_path_matcher(value: Any, path: str, ctx: ParseContext) -> PathMatcher:
    """Parse a static-config ``prefix``; literal segments must be valid path labels."""
    from fastmesh.naming import ParseError, Path  # lazy: naming is a sibling package

    text = as_str(value, path, ctx).strip()
    if not text.startswith("/"):
        raise ConfigError(path, f"invalid prefix {text!r}: must start with '/'")
    body = text[1:]
    if body.endswith("/"):
        body = body[:-1]  # linkerd splits on "/" and so ignores one trailing slash
    segments: list[tuple[str, str, str]] = []
    for raw in body.split("/") if body else ():
        m = _SEGMENT_RE.fullmatch(raw)
        if m is None:
            raise ConfigError(path, f"invalid prefix {text!r}: empty segment")
        if m.group(1):
            segments.append(("any", "*", ""))
        elif m.group(2):
            segments.append(("capture", m.group(2), m.group(3) or ""))
        else:
            segments.append(("literal", raw, ""))
    # Literal parts must be real path labels: check them with the dtab path grammar.
    probe = [arg if op == "literal" else "x" for op, arg, _ in segments]
    probe += [suffix for _, _, suffix in segments if suffix]
    try:
        Path.read("/" + "/".join(probe))
    except ParseError as exc:
        raise ConfigError(path, f"invalid prefix {text!r}: {exc}") from exc
    return PathMatcher(text=text, segments=tuple(segments))
