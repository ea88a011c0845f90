"""NameTree: the shape of a name's meaning (finagle ``NameTree``).

Role in the data path: a dtab entry's right-hand side is a NameTree of Paths; binding
turns it into a NameTree of bound names, which the router turns into a destination
(a leaf → one client, a union → weighted random choice per request, Neg/Fail/Empty →
no route, 502). Nodes:

* ``Leaf(value)`` — a Path (still to be resolved) or a BoundName;
* ``Alt(trees)`` — fail-over: the first non-negative tree wins (``a | b``);
* ``Union(weighted)`` — load spread over members by weight (``0.3*a & 0.7*b``);
* ``Neg`` (``~``, nothing here), ``Fail`` (``!``, stop looking), ``Empty`` (``$``, exists
  but has no members).

``show`` prints the concrete syntax of spec §3.2 so that ``NameTree.read(t.show)``
gives back an equivalent tree; ``simplified`` and ``eval`` follow finagle's rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterator

DEFAULT_WEIGHT = 1.0


class NameTree:
    """Base of every name-tree node."""

    __slots__ = ()

    @staticmethod
    def read(text: str) -> "NameTree":
        """Parse ``tree`` of spec §3.2 (leaves are Paths); raises ParseError."""
        from .parser import parse_name_tree

        return parse_name_tree(text)

    @property
    def show(self) -> str:
        return show_tree(self)

    def map(self, fn: Callable[[Any], Any]) -> "NameTree":
        """Apply ``fn`` to every leaf value, keeping the shape."""
        return map_tree(self, fn)

    @property
    def simplified(self) -> "NameTree":
        return simplify(self)

    def eval(self) -> frozenset | None:
        """The set of leaf values this tree denotes, or None when it is Neg or Fail."""
        result = _eval(self)
        if result is Neg or result is Fail:
            return None
        return result

    def leaves(self) -> Iterator[Any]:
        """Every leaf value, depth first, left to right."""
        yield from _leaves(self)


@dataclass(frozen=True, slots=True)
class Leaf(NameTree):
    value: Any


@dataclass(frozen=True, slots=True)
class Weighted:
    weight: float
    tree: NameTree


@dataclass(frozen=True, slots=True)
class Alt(NameTree):
    trees: tuple[NameTree, ...]

    def __post_init__(self):
        if not isinstance(self.trees, tuple):
            object.__setattr__(self, "trees", tuple(self.trees))

    @staticmethod
    def of(*trees: NameTree) -> "Alt":
        return Alt(trees)


@dataclass(frozen=True, slots=True)
class Union(NameTree):
    weighted: tuple[Weighted, ...]

    def __post_init__(self):
        if not isinstance(self.weighted, tuple):
            object.__setattr__(self, "weighted", tuple(self.weighted))

    @staticmethod
    def of(*members: "Weighted | NameTree") -> "Union":
        """Members given as Weighted, or as trees with the default weight."""
        return Union(tuple(m if isinstance(m, Weighted) else Weighted(DEFAULT_WEIGHT, m) for m in members))


class _Atom(NameTree):
    """Neg, Fail and Empty: singletons compared by identity."""

    __slots__ = ("_name", "_symbol")

    def __init__(self, name: str, symbol: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_symbol", symbol)

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self):
        return self._name  # pickles as the module-level singleton


Neg = _Atom("Neg", "~")
Fail = _Atom("Fail", "!")
Empty = _Atom("Empty", "$")


# --- show ----------------------------------------------------------------------------------


def format_weight(weight: float) -> str:
    """Java's ``%.2f`` (half-up rounding of the shortest decimal form): ``0.50``, ``3.00``."""
    return str(Decimal(repr(float(weight))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def show_value(value: Any) -> str:
    """How a leaf value prints: a Path by its show, a bound name by its id."""
    shown = getattr(value, "show", None)
    if isinstance(shown, str):
        return shown
    ident = getattr(value, "id", None)
    if ident is not None and isinstance(getattr(ident, "show", None), str):
        return ident.show
    return str(value)


def _single(tree: NameTree) -> NameTree | None:
    """The only member of a one-member Alt/Union (shown as that member), else None."""
    if isinstance(tree, Alt) and len(tree.trees) == 1:
        return tree.trees[0]
    if isinstance(tree, Union) and len(tree.weighted) == 1:
        return tree.weighted[0].tree
    return None


def show_tree(tree: NameTree) -> str:
    # Top level: an Alt prints its members bare, joined with " | ".
    while (inner := _single(tree)) is not None:
        tree = inner
    if isinstance(tree, Alt):
        return " | ".join(_show1(t) for t in tree.trees)
    return _show1(tree)


def _show1(tree: NameTree) -> str:
    # Inside an Alt: a Union prints bare, a nested Alt needs parentheses.
    while (inner := _single(tree)) is not None:
        tree = inner
    if isinstance(tree, Union):
        parts = []
        for w in tree.weighted:
            if w.weight == DEFAULT_WEIGHT:
                parts.append(_show_simple(w.tree))
            else:
                parts.append(f"{format_weight(w.weight)}*{_show_simple(w.tree)}")
        return " & ".join(parts)
    if isinstance(tree, Alt):
        return "(" + show_tree(tree) + ")"
    return _show_simple(tree)


def _show_simple(tree: NameTree) -> str:
    while (inner := _single(tree)) is not None:
        tree = inner
    if isinstance(tree, (Alt, Union)):
        return "(" + show_tree(tree) + ")"
    if isinstance(tree, Leaf):
        return show_value(tree.value)
    if isinstance(tree, _Atom):
        return tree._symbol
    raise TypeError(f"not a name tree: {tree!r}")


# --- map / simplify / eval -----------------------------------------------------------------


def map_tree(tree: NameTree, fn: Callable[[Any], Any]) -> NameTree:
    if isinstance(tree, Leaf):
        return Leaf(fn(tree.value))
    if isinstance(tree, Alt):
        return Alt(tuple(map_tree(t, fn) for t in tree.trees))
    if isinstance(tree, Union):
        return Union(tuple(Weighted(w.weight, map_tree(w.tree, fn)) for w in tree.weighted))
    return tree


def simplify(tree: NameTree) -> NameTree:
    """An evaluation-equivalent tree (finagle ``NameTree.simplify``)."""
    if isinstance(tree, Alt):
        if not tree.trees:
            return Neg
        if len(tree.trees) == 1:
            return simplify(tree.trees[0])
        kept: list[NameTree] = []
        for t in tree.trees:
            s = simplify(t)
            if s is Fail:
                kept.append(Fail)  # a Fail stops the search: later members are unreachable
                break
            if s is Neg:
                continue
            kept.append(s)
        if not kept:
            return Neg
        if len(kept) == 1:
            return kept[0]
        return Alt(tuple(kept))
    if isinstance(tree, Union):
        if not tree.weighted:
            return Neg
        if len(tree.weighted) == 1:
            return simplify(tree.weighted[0].tree)
        members = []
        for w in tree.weighted:
            s = simplify(w.tree)
            if s is Fail or s is Neg:
                continue
            members.append(Weighted(w.weight, s))
        if not members:
            return Neg
        if len(members) == 1:
            return members[0].tree
        return Union(tuple(members))
    return tree


def _eval(tree: NameTree):
    """Neg, Fail, or a frozenset of leaf values."""
    if isinstance(tree, Leaf):
        return frozenset((tree.value,))
    if tree is Empty:
        return frozenset()
    if tree is Neg or tree is Fail:
        return tree
    if isinstance(tree, Alt):
        for t in tree.trees:
            r = _eval(t)
            if r is Fail:
                return Fail
            if r is Neg:
                continue
            return r
        return Neg
    if isinstance(tree, Union):
        sets = []
        for w in tree.weighted:
            r = _eval(w.tree)
            if r is Fail or r is Neg:
                continue
            sets.append(r)
        if not sets:
            return Neg
        return frozenset().union(*sets)
    raise TypeError(f"not a name tree: {tree!r}")


def _leaves(tree: NameTree) -> Iterator[Any]:
    if isinstance(tree, Leaf):
        yield tree.value
    elif isinstance(tree, Alt):
        for t in tree.trees:
            yield from _leaves(t)
    elif isinstance(tree, Union):
        for w in tree.weighted:
            yield from _leaves(w.tree)
