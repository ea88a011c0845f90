"""Delegation: every rewriting step of a name, for people (CLI) and the admin UI.

Role: ``fastmesh delegate`` prints how a name is resolved step by step, and the admin
server's ``/delegator.json`` returns linkerd's delegate tree (spec §8.4). Not on the
request path. Unlike routing, delegation evaluates and shows *every* Alt branch; the
routed answer (the bound tree the router would use) comes from ``Interpreter.bind`` so
the two can never disagree about where a request goes.

Delegate-tree nodes carry the path they stand for and the dentry that produced them:
Delegate (one rewrite), Alt, Union, Leaf (a bound name), Neg, Fail, Empty, Exception
(a namer error) and Transformation (a transformer rewrote a leaf). The tree is then
simplified like linkerd's ``DelegateTree.simplified``: a delegate whose child has the
same path collapses into the child, one-branch alts/unions become delegates, empty ones
neg, and nested alts for the same path are flattened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .addr import Addr, AddrBound, AddrFailed, AddrNeg, AddrPending, BoundName
from .dtab import Dentry, Dtab
from .interpreter import (
    MAX_DEPTH,
    BindResult,
    Interpreter,
    LookupFailed,
    LookupOk,
    LookupPending,
)
from .nametree import Alt, Empty, Fail, Leaf, NameTree, Neg, Union, format_weight
from .path import Path

DELEGATION_MAX_DEPTH_MESSAGE = "Max recursion level reached."
MAX_NODES = 20_000  # a self-referencing union would otherwise grow the tree exponentially
_FAIL_PATH = Path.utf8("$", "fail")


# --- delegate-tree nodes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DNode:
    path: Path
    dentry: Dentry | None


@dataclass(frozen=True, slots=True)
class DException(DNode):
    message: str


@dataclass(frozen=True, slots=True)
class DEmpty(DNode):
    pass


@dataclass(frozen=True, slots=True)
class DFail(DNode):
    pass


@dataclass(frozen=True, slots=True)
class DNeg(DNode):
    pass


@dataclass(frozen=True, slots=True)
class DDelegate(DNode):
    tree: DNode


@dataclass(frozen=True, slots=True)
class DLeaf(DNode):
    value: Any  # a BoundName once bound (a Path while still to be resolved)


@dataclass(frozen=True, slots=True)
class DAlt(DNode):
    trees: tuple[DNode, ...]


@dataclass(frozen=True, slots=True)
class DWeighted:
    weight: float
    tree: DNode


@dataclass(frozen=True, slots=True)
class DUnion(DNode):
    weighted: tuple[DWeighted, ...]


@dataclass(frozen=True, slots=True)
class DTransformation(DNode):
    name: str
    bound: BoundName  # before the transformation
    tree: DNode  # the transformed leaf


def _replace(node: DNode, **changes) -> DNode:
    values = {f: getattr(node, f) for f in node.__dataclass_fields__}
    values.update(changes)
    return type(node)(**values)


def from_name_tree(path: Path, dentry: Dentry | None, tree: NameTree) -> DNode:
    """A delegate node for a dentry's rewritten tree; a ``~`` shows as path ``~``."""
    if tree is Empty:
        return DEmpty(path, dentry)
    if tree is Fail:
        return DFail(path, dentry)
    if tree is Neg:
        return DNeg(Path.empty, dentry)
    if isinstance(tree, Leaf):
        return DLeaf(path, dentry, tree.value)
    if isinstance(tree, Alt):
        return DAlt(path, dentry, tuple(from_name_tree(path, dentry, t) for t in tree.trees))
    if isinstance(tree, Union):
        members = tuple(DWeighted(w.weight, from_name_tree(path, dentry, w.tree)) for w in tree.weighted)
        return DUnion(path, dentry, members)
    raise TypeError(f"not a name tree: {tree!r}")


# --- building the tree -----------------------------------------------------------------------


class _TooBig(Exception):
    pass


class _Delegator:
    def __init__(self, interp: Interpreter, dtab: Dtab):
        self.interp = interp
        self.dtab = dtab
        self.nodes = 0
        self.pending = False

    def lookup(self, dentry: Dentry | None, path: Path):
        matches = [from_name_tree(path, d, tree) for d, tree in self.dtab.matching(path)]
        if len(matches) == 1:
            return LookupOk(matches[0])
        if matches:
            return LookupOk(DAlt(path, dentry, tuple(matches)))
        state = self.interp.lookup_namers(path)
        if isinstance(state, LookupFailed):
            return LookupOk(DException(path, dentry, state.message))
        if state is LookupPending:
            return state
        if state.tree is Neg:
            return LookupOk(DNeg(path, dentry))  # nothing answered: show the path that found nothing
        return LookupOk(from_name_tree(path, dentry, state.tree))

    def bind(self, node: DNode, depth: int):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        if depth > MAX_DEPTH:
            return LookupFailed(DELEGATION_MAX_DEPTH_MESSAGE)
        if isinstance(node, (DException, DEmpty, DFail, DNeg, DTransformation)):
            return LookupOk(node)
        if isinstance(node, DLeaf):
            if not isinstance(node.value, Path):
                return LookupOk(node)
            target = node.value
            step = self.lookup(node.dentry, target)
            if not isinstance(step, LookupOk):
                return step
            inner = self.bind(step.tree, depth + 1)
            if not isinstance(inner, LookupOk):
                return inner
            return LookupOk(DDelegate(target, node.dentry, inner.tree))
        if isinstance(node, DDelegate):
            inner = self.bind(node.tree, depth)
            if not isinstance(inner, LookupOk):
                return inner
            return LookupOk(DDelegate(node.path, node.dentry, inner.tree))
        if isinstance(node, DAlt):
            if not node.trees:
                return LookupOk(DNeg(node.path, node.dentry))
            if len(node.trees) == 1:
                return self.bind(DDelegate(node.path, node.dentry, node.trees[0]), depth)
            # Unlike routing, bind every alternative so the UI can show them all.
            states = [self.bind(t, depth) for t in node.trees]
            oks = [s.tree for s in states if isinstance(s, LookupOk)]
            if oks:
                return LookupOk(DAlt(node.path, node.dentry, tuple(oks)))
            return next((s for s in states if isinstance(s, LookupFailed)), LookupPending)
        if isinstance(node, DUnion):
            if not node.weighted:
                return LookupOk(DNeg(node.path, node.dentry))
            if len(node.weighted) == 1:
                return self.bind(DDelegate(node.path, node.dentry, node.weighted[0].tree), depth)
            states = [(w.weight, self.bind(w.tree, depth)) for w in node.weighted]
            oks = [DWeighted(w, s.tree) for w, s in states if isinstance(s, LookupOk)]
            if oks:
                return LookupOk(DUnion(node.path, node.dentry, tuple(oks)))
            return next((s for _, s in states if isinstance(s, LookupFailed)), LookupPending)
        raise TypeError(f"not a delegate node: {node!r}")


def simplify(node: DNode) -> DNode:
    if isinstance(node, DDelegate):
        child = simplify(node.tree)
        if child.path == node.path:
            return child
        return DDelegate(node.path, node.dentry, child)
    if isinstance(node, DAlt):
        if not node.trees:
            return DNeg(node.path, node.dentry)
        if len(node.trees) == 1:
            return simplify(DDelegate(node.path, node.dentry, node.trees[0]))
        flat: list[DNode] = []
        for t in node.trees:
            s = simplify(t)
            if isinstance(s, DAlt) and s.path == node.path:
                flat.extend(s.trees)
            else:
                flat.append(s)
        return DAlt(node.path, node.dentry, tuple(flat))
    if isinstance(node, DUnion):
        if not node.weighted:
            return DNeg(node.path, node.dentry)
        if len(node.weighted) == 1:
            return simplify(DDelegate(node.path, node.dentry, node.weighted[0].tree))
        return DUnion(node.path, node.dentry, tuple(DWeighted(w.weight, simplify(w.tree)) for w in node.weighted))
    return node


def apply_transformer(node: DNode, transformer) -> DNode:
    """Wrap every bound leaf in a Transformation node showing before and after."""
    if isinstance(node, DLeaf):
        if not isinstance(node.value, BoundName):
            return node
        after = transformer.map_bound(node.value)
        return DTransformation(node.path, None, transformer.name, node.value,
                               DLeaf(after.id, node.dentry, after))
    if isinstance(node, DDelegate):
        return DDelegate(node.path, node.dentry, apply_transformer(node.tree, transformer))
    if isinstance(node, DAlt):
        return DAlt(node.path, node.dentry, tuple(apply_transformer(t, transformer) for t in node.trees))
    if isinstance(node, DUnion):
        return DUnion(node.path, node.dentry,
                      tuple(DWeighted(w.weight, apply_transformer(w.tree, transformer)) for w in node.weighted))
    if isinstance(node, DTransformation):
        return _replace(node, tree=apply_transformer(node.tree, transformer))
    return node


# --- JSON (linkerd /delegator.json) ------------------------------------------------------------


def _address_json(a) -> dict:
    meta: dict[str, Any] = {}
    for key, value in a.meta.items():
        if key == "weight":
            try:
                value = float(value)
            except ValueError:
                pass
        meta[key] = value
    return {"ip": a.host, "port": a.port, "meta": meta}


def addr_json(addr: Addr) -> dict:
    if isinstance(addr, AddrBound):
        addrs = sorted(addr.addresses, key=lambda a: (a.host, a.port))
        return {"type": "bound", "addrs": [_address_json(a) for a in addrs], "meta": dict(addr.meta)}
    if isinstance(addr, AddrFailed):
        return {"type": "failed", "cause": addr.cause}
    if addr is AddrPending:
        return {"type": "pending"}
    if addr is AddrNeg:
        return {"type": "neg"}
    raise TypeError(f"not an address state: {addr!r}")


def bound_json(bound: BoundName) -> dict:
    return {"addr": addr_json(bound.addr.value), "id": bound.id.show, "path": bound.residual.show}


def _dentry_json(dentry: Dentry | None) -> dict:
    if dentry is None:
        return {}
    return {"dentry": {"prefix": dentry.prefix.show, "dst": dentry.dst.show}}


def node_json(node: DNode) -> dict:
    if isinstance(node, DException):
        return {"type": "exception", "path": node.path.show, **_dentry_json(node.dentry), "message": node.message}
    if isinstance(node, DEmpty):
        return {"type": "empty", "path": node.path.show, **_dentry_json(node.dentry)}
    if isinstance(node, DFail):
        shown = node.path.show if node.path.startswith(_FAIL_PATH) else "!"
        return {"type": "fail", "path": shown, **_dentry_json(node.dentry)}
    if isinstance(node, DNeg):
        shown = "~" if node.path.is_empty else node.path.show
        return {"type": "neg", "path": shown, **_dentry_json(node.dentry)}
    if isinstance(node, DDelegate):
        return {"type": "delegate", "path": node.path.show, **_dentry_json(node.dentry),
                "delegate": node_json(node.tree)}
    if isinstance(node, DAlt):
        return {"type": "alt", "path": node.path.show, **_dentry_json(node.dentry),
                "alt": [node_json(t) for t in node.trees]}
    if isinstance(node, DUnion):
        return {"type": "union", "path": node.path.show, **_dentry_json(node.dentry),
                "union": [{"weight": w.weight, "tree": node_json(w.tree)} for w in node.weighted]}
    if isinstance(node, DLeaf):
        if isinstance(node.value, BoundName):
            return {"type": "leaf", "path": node.path.show, **_dentry_json(node.dentry),
                    "bound": bound_json(node.value)}
        return {"type": "neg", "path": node.path.show, **_dentry_json(node.dentry)}
    if isinstance(node, DTransformation):
        return {"type": "transformation", "path": node.path.show, "name": node.name,
                "bound": bound_json(node.bound), "tree": node_json(node.tree)}
    raise TypeError(f"not a delegate node: {node!r}")


# --- text (CLI) ----------------------------------------------------------------------------------


def addr_text(addr: Addr) -> str:
    """An address state for people: `[10.0.0.1:80, ...]`, `neg`, `pending`, `failed: why`."""
    if isinstance(addr, AddrBound):
        return "[" + ", ".join(a.show for a in sorted(addr.addresses, key=lambda a: (a.host, a.port))) + "]"
    if isinstance(addr, AddrFailed):
        return f"failed: {addr.cause}"
    if addr is AddrPending:
        return "pending"
    return "neg"


def _steps(node: DNode, indent: int, out: list[str], weight: float | None = None) -> None:
    pad = "  " * indent
    head = ""
    if weight is not None:
        head = f"{format_weight(weight)}* "
    where = f" ({node.dentry.show})" if node.dentry is not None else ""
    if isinstance(node, DDelegate):
        out.append(f"{pad}{head}{node.path.show}{where}")
        _steps(node.tree, indent + 1, out)
    elif isinstance(node, DAlt):
        out.append(f"{pad}{head}{node.path.show}{where} alternates, first non-neg wins:")
        for t in node.trees:
            _steps(t, indent + 1, out)
    elif isinstance(node, DUnion):
        out.append(f"{pad}{head}{node.path.show}{where} union of:")
        for w in node.weighted:
            _steps(w.tree, indent + 1, out, w.weight)
    elif isinstance(node, DLeaf):
        if isinstance(node.value, BoundName):
            b = node.value
            out.append(f"{pad}{head}{node.path.show}{where} => bound {b.id.show} "
                       f"residual {b.residual.show} addresses {addr_text(b.addr.value)}")
        else:
            out.append(f"{pad}{head}{node.path.show}{where} => unresolved")
    elif isinstance(node, DNeg):
        shown = "~" if node.path.is_empty else node.path.show
        out.append(f"{pad}{head}{shown}{where} => neg")
    elif isinstance(node, DFail):
        # the JSON shows "!" for a dentry's own `!`; people want the path that failed too
        shown = node.path.show if node.path.startswith(_FAIL_PATH) else f"{node.path.show} !"
        out.append(f"{pad}{head}{shown}{where} => fail")
    elif isinstance(node, DEmpty):
        out.append(f"{pad}{head}{node.path.show}{where} => empty")
    elif isinstance(node, DException):
        out.append(f"{pad}{head}{node.path.show}{where} => error: {node.message}")
    elif isinstance(node, DTransformation):
        out.append(f"{pad}{head}{node.path.show} => transformed by {node.name}")
        _steps(node.tree, indent + 1, out)


# --- the result ------------------------------------------------------------------------------------


@dataclass
class Delegation:
    """Where a name goes and how it got there."""

    path: Path
    dtab: Dtab
    root: DNode | None  # the simplified, transformed delegate tree (None on error)
    bind: BindResult  # what the router would route with
    error: str | None = None  # the delegation itself failed (e.g. a loop)
    pending: bool = False
    steps: list[str] = field(default_factory=list)

    @property
    def tree(self) -> NameTree:
        return self.bind.tree

    @property
    def bound_show(self) -> str:
        if self.bind.error is not None:
            return "!"
        if self.bind.pending:
            return "~"
        return self.bind.tree.show

    @property
    def residual(self) -> Path:
        names = self.bind.bound_names()
        return names[0].residual if names else Path.empty

    @property
    def ok(self) -> bool:
        return self.bind.ok and self.bind.has_addresses()

    def to_delegator_json(self) -> dict:
        """linkerd's ``/delegator.json`` body (a dict; serialise compactly)."""
        if self.root is None:
            return {"type": "exception", "path": self.path.show, "message": self.error or "delegation failed"}
        return node_json(self.root)


def delegate(dtab: Dtab, path: Path, interpreter: Interpreter) -> Delegation:
    """Resolve ``path`` under ``dtab`` (the whole dtab: base ++ overrides), keeping every step."""
    d = _Delegator(interpreter, dtab)
    error = None
    root = None
    pending = False
    try:
        state = d.bind(DLeaf(path, None, path), 0)
    except _TooBig:
        state = LookupFailed(f"delegation tree larger than {MAX_NODES} nodes")
    except RecursionError:
        state = LookupFailed(DELEGATION_MAX_DEPTH_MESSAGE)
    if isinstance(state, LookupOk):
        root = simplify(state.tree)
        try:
            for transformer in interpreter.transformers:
                if getattr(transformer, "delegating", True):
                    root = apply_transformer(root, transformer)
        except Exception as exc:  # a transformer failing should show, not crash the admin page
            error = str(exc) or type(exc).__name__
            root = None
    elif state is LookupPending:
        pending = True
    else:
        error = state.message
    bound = interpreter.bind(dtab, path)
    if root is not None and _has_pending_addr(root):
        pending = True
    result = Delegation(path, dtab, root, bound, error=error, pending=pending or bound.pending)
    steps: list[str] = []
    if root is not None:
        _steps(root, 0, steps)
    elif pending:
        steps.append(f"{path.show} => pending")
    else:
        steps.append(f"{path.show} => error: {error}")
    result.steps = steps
    return result


def _has_pending_addr(node: DNode) -> bool:
    if isinstance(node, DLeaf):
        return isinstance(node.value, BoundName) and node.value.addr.value is AddrPending
    if isinstance(node, DDelegate):
        return _has_pending_addr(node.tree)
    if isinstance(node, DAlt):
        return any(_has_pending_addr(t) for t in node.trees)
    if isinstance(node, DUnion):
        return any(_has_pending_addr(w.tree) for w in node.weighted)
    if isinstance(node, DTransformation):
        return _has_pending_addr(node.tree)
    return False


def format_delegation(d: Delegation) -> str:
    """The CLI's text: each step, then the bound tree and residual."""
    lines = [f"delegating {d.path.show}"]
    if d.dtab:
        lines.append(f"dtab: {d.dtab.show}")
    lines.append("steps:")
    lines.extend("  " + s for s in d.steps)
    if d.bind.error is not None:
        lines.append(f"bound: ! (error: {d.bind.error})")
    elif d.bind.pending:
        lines.append("bound: (pending)")
    else:
        lines.append(f"bound: {d.bound_show}")
    lines.append(f"residual: {d.residual.show}")
    for name in d.bind.bound_names():
        lines.append(f"  {name.id.show} addresses {addr_text(name.addr.value)}")
    return "\n".join(lines) + "\n"


def delegation_to_cli_json(d: Delegation) -> dict:
    return {"path": d.path.show, "steps": list(d.steps), "bound": d.bound_show, "residual": d.residual.show}


__all__ = [
    "DAlt", "DDelegate", "DEmpty", "DException", "DFail", "DLeaf", "DNeg", "DNode", "DTransformation",
    "DUnion", "DWeighted", "Delegation", "addr_json", "addr_text", "delegate", "delegation_to_cli_json",
    "format_delegation", "node_json",
]
