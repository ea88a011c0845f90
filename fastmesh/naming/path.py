"""Path: the name of a service as a sequence of byte labels (finagle's ``Path``).

Role in the data path: every request is named by a Path (``/svc/world``); the route
cache keys on it, dtab delegation rewrites it, and its shown form feeds the
``l5d-dst-*`` headers, metric scopes and error texts. Paths are immutable and hash
once, because requests carrying an ``l5d-dtab`` override compare and hash them on the
request path.

Syntax (spec §3.1): ``/`` alone is the empty path; otherwise ``/label(/label)*`` where
a label is one or more showable characters ``[0-9A-Za-z_:.#$%-]`` or ``\\xHH`` escapes.
Showing prints a label as is when every byte is showable, else every byte as ``\\xhh``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Iterator

# The characters a label may hold unescaped (finagle Path.showableChars).
SHOWABLE_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_:.#$%-")
_SHOWABLE_BYTES = frozenset(c.encode("ascii")[0] for c in SHOWABLE_CHARS)


class ParseError(ValueError):
    """A path, name tree, dentry or dtab that does not follow the grammar of spec §3.

    The message reads like finagle's: ``'/' expected but 'i' found at '[i]nvalid-param'``;
    ``offset`` is the index in the input where parsing stopped.
    """

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset


def show_label(label: bytes) -> str:
    if all(b in _SHOWABLE_BYTES for b in label):
        return label.decode("ascii")
    # One non-showable byte escapes the whole label, so the shown form is unambiguous.
    return "".join("\\x%02x" % b for b in label)


class Path:
    """An immutable sequence of non-empty byte labels; hashable, comparable, sliceable."""

    __slots__ = ("labels", "_hash", "_show")

    labels: tuple[bytes, ...]
    empty: "Path"  # set below

    def __init__(self, *labels: bytes):
        for label in labels:
            if not isinstance(label, (bytes, bytearray)):
                raise TypeError(f"path labels are bytes, got {type(label).__name__}")
            if not label:
                raise ValueError("path labels must be non-empty")
        object.__setattr__(self, "labels", tuple(bytes(label) for label in labels))
        object.__setattr__(self, "_hash", hash(self.labels))
        object.__setattr__(self, "_show", None)

    @classmethod
    def _of(cls, labels: tuple[bytes, ...]) -> "Path":
        """Build from labels already known to be non-empty bytes (no re-validation)."""
        path = object.__new__(cls)
        object.__setattr__(path, "labels", labels)
        object.__setattr__(path, "_hash", hash(labels))
        object.__setattr__(path, "_show", None)
        return path

    # --- construction ------------------------------------------------------------------

    @staticmethod
    def read(text: str) -> "Path":
        """Parse the concrete syntax (spec §3.1); raises :class:`ParseError`."""
        return _read_cached(text)

    @staticmethod
    def utf8(*labels: str) -> "Path":
        """A path whose labels are the UTF-8 bytes of the given strings (``Path.Utf8``)."""
        encoded = []
        for label in labels:
            if not label:
                raise ValueError("path labels must be non-empty")
            encoded.append(label.encode("utf-8"))
        return Path._of(tuple(encoded))

    # --- queries -------------------------------------------------------------------------

    @property
    def show(self) -> str:
        shown = self._show
        if shown is None:
            shown = "/" + "/".join(show_label(label) for label in self.labels)
            object.__setattr__(self, "_show", shown)
        return shown

    @property
    def is_empty(self) -> bool:
        return not self.labels

    def take(self, n: int) -> "Path":
        if n >= len(self.labels):
            return self
        return Path._of(self.labels[: max(n, 0)])

    def drop(self, n: int) -> "Path":
        if n <= 0:
            return self
        return Path._of(self.labels[n:])

    def startswith(self, other: "Path") -> bool:
        n = len(other.labels)
        return len(self.labels) >= n and self.labels[:n] == other.labels

    def utf8_labels(self) -> tuple[str, ...]:
        """The labels decoded as UTF-8 (bad bytes replaced), like finagle's ``Path.Utf8``."""
        return tuple(label.decode("utf-8", "replace") for label in self.labels)

    def __add__(self, other: "Path") -> "Path":
        if not isinstance(other, Path):
            return NotImplemented
        if not other.labels:
            return self
        if not self.labels:
            return other
        return Path._of(self.labels + other.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.labels)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Path._of(self.labels[index])
        return self.labels[index]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Path):
            return NotImplemented
        return self._hash == other._hash and self.labels == other.labels

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __lt__(self, other: "Path") -> bool:
        return self.labels < other.labels

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, name, value):
        raise AttributeError("Path is immutable")

    def __repr__(self) -> str:
        return f"Path({self.show})"

    def __str__(self) -> str:
        return self.show

    def __reduce__(self):
        return (Path, self.labels)


Path.empty = Path._of(())


def path_of(labels: Iterable[bytes]) -> Path:
    """A Path from an iterable of labels (validated)."""
    return Path(*labels)


@lru_cache(maxsize=4096)
def _read_cached(text: str) -> Path:
    from .parser import parse_path  # parser imports this module

    return parse_path(text)
