"""Dtab: delegation tables, the rewrite rules that turn service names into bound names.

Role in the data path: the router's base dtab plus the request's local dtab
(``l5d-ctx-dtab`` then ``l5d-dtab``, spec §6.2) decide where a name goes. The route cache
keys on (service name, local dtab), so Dtabs are immutable and hashable, and
``Dtab.read`` is cached because the same override header repeats across requests.

A dentry ``prefix=>tree`` matches a path when the prefix's elements equal the path's
first labels (``*`` matches any one label); the match rewrites the path to each leaf of
``tree`` plus the unmatched suffix (spec §3.3). ``lookup`` walks the entries from last
to first, so later entries win and earlier ones are fallbacks (spec §3.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

from .nametree import Alt, NameTree, Neg
from .path import Path, show_label

WILDCARD = None  # a prefix element that matches any one label ('*')


class Prefix:
    """A dentry prefix: labels (bytes) and wildcards (``None``)."""

    __slots__ = ("elems", "_hash")

    def __init__(self, *elems: bytes | None):
        for elem in elems:
            if elem is not None and (not isinstance(elem, bytes) or not elem):
                raise ValueError("prefix elements are non-empty bytes or None (wildcard)")
        object.__setattr__(self, "elems", tuple(elems))
        object.__setattr__(self, "_hash", hash(self.elems))

    @staticmethod
    def read(text: str) -> "Prefix":
        from .parser import parse_prefix

        return parse_prefix(text)

    @staticmethod
    def from_path(path: Path) -> "Prefix":
        return Prefix(*path.labels)

    @property
    def show(self) -> str:
        return "/" + "/".join("*" if e is None else show_label(e) for e in self.elems)

    def matches(self, path: Path) -> bool:
        labels = path.labels
        if len(labels) < len(self.elems):
            return False
        for elem, label in zip(self.elems, labels):
            if elem is not None and elem != label:
                return False
        return True

    def __len__(self) -> int:
        return len(self.elems)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Prefix):
            return NotImplemented
        return self.elems == other.elems

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, name, value):
        raise AttributeError("Prefix is immutable")

    def __repr__(self) -> str:
        return f"Prefix({self.show})"


@dataclass(frozen=True, slots=True)
class Dentry:
    """One delegation rule: ``prefix => dst``."""

    prefix: Prefix
    dst: NameTree

    @staticmethod
    def read(text: str) -> "Dentry":
        from .parser import parse_dentry

        return parse_dentry(text)

    @property
    def show(self) -> str:
        return f"{self.prefix.show}=>{self.dst.show}"

    def rewrite(self, path: Path) -> NameTree:
        """The entry's tree with the part of ``path`` after the prefix appended to each leaf."""
        suffix = path.drop(len(self.prefix))
        if suffix.is_empty:
            return self.dst
        return self.dst.map(lambda p: p + suffix)


class Dtab:
    """An ordered, immutable sequence of dentries."""

    __slots__ = ("entries", "_hash")

    entries: tuple[Dentry, ...]
    empty: "Dtab"  # set below

    def __init__(self, entries: Sequence[Dentry] = ()):
        object.__setattr__(self, "entries", tuple(entries))
        object.__setattr__(self, "_hash", hash(self.entries))

    @staticmethod
    def read(text: str) -> "Dtab":
        """Parse ``dtab`` of spec §3.2 (comments, wildcards, weights); raises ParseError."""
        return _read_cached(text)

    @property
    def show(self) -> str:
        return ";".join(d.show for d in self.entries)

    def lookup(self, path: Path) -> NameTree:
        """One rewriting step (spec §3.4): Neg, the one match, or Alt(last match … first)."""
        matches = [d.rewrite(path) for d in reversed(self.entries) if d.prefix.matches(path)]
        if not matches:
            return Neg
        if len(matches) == 1:
            return matches[0]
        return Alt(tuple(matches))

    def matching(self, path: Path) -> list[tuple[Dentry, NameTree]]:
        """The entries matching ``path``, last first, with their rewritten trees."""
        return [(d, d.rewrite(path)) for d in reversed(self.entries) if d.prefix.matches(path)]

    def __add__(self, other: "Dtab") -> "Dtab":
        if not isinstance(other, Dtab):
            return NotImplemented
        if not other.entries:
            return self
        if not self.entries:
            return other
        return Dtab(self.entries + other.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Dentry]:
        return iter(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Dtab):
            return NotImplemented
        return self._hash == other._hash and self.entries == other.entries

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, name, value):
        raise AttributeError("Dtab is immutable")

    def __repr__(self) -> str:
        return f"Dtab({self.show})"

    def __str__(self) -> str:
        return self.show


Dtab.empty = Dtab(())


@lru_cache(maxsize=1024)
def _read_cached(text: str) -> Dtab:
    from .parser import parse_dtab

    return parse_dtab(text)


def leaf_paths(tree: NameTree) -> list[Path]:
    """The Path leaves of a tree (helper for callers that inspect dtab targets)."""
    return [v for v in tree.leaves() if isinstance(v, Path)]


__all__ = ["Dentry", "Dtab", "Prefix", "WILDCARD", "leaf_paths"]
