"""The default name interpreter: dtab → configured namers → ``/$`` built-ins → transformers.

Role in the data path: on a route-cache miss the router calls ``Interpreter.bind(dtab,
path)`` with ``dtab = routerDtab ++ localDtab`` and the service name; the result is the
simplified bound tree the route cache stores (Union / Leaf(BoundName) / Neg / Fail /
Empty, no Alt). Binding is synchronous over the namers' current state.

Rules (spec §2.2, §3.5, §5.4):

* a path is first rewritten by the dtab; **if any entry matches, the namers are not
  asked**; otherwise the namers whose ``/#``+prefix starts the path are asked, the later
  configured one first, falling through on Neg; then the ``/$`` built-ins;
* Alt takes the first branch that is not Neg (Fail stops the search); Union binds every
  member, drops members whose binding errored when another is Ok, and is simplified;
* pending or an error anywhere on the taken route makes the whole result pending or
  failed; depth above 100 fails with linkerd's message;
* interpreter transformers then rewrite the whole bound tree, in configured order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .addr import AddrBound, BoundName, Closable
from .builtins import BuiltinError, UnknownNamerError, lookup_builtin
from .dtab import Dtab
from .namer import PENDING, Namer
from .nametree import Alt, Empty, Fail, Leaf, NameTree, Neg, Union, Weighted
from .path import Path

MAX_DEPTH = 100  # finagle flag namerMaxDepth
MAX_DEPTH_MESSAGE = f"Max recursion level: {MAX_DEPTH} reached in Namer lookup"
CONFIGURED_NAMER_LABEL = b"#"


# --- lookup states (finagle Activity states) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookupOk:
    tree: NameTree


class _LookupPending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "LookupPending"


LookupPending = _LookupPending()


@dataclass(frozen=True, slots=True)
class LookupFailed:
    message: str


LookupState = LookupOk | _LookupPending | LookupFailed


def exception_message(exc: BaseException) -> str:
    """An exception's message, or its class name when it has none (linkerd's rule)."""
    text = str(exc)
    return text if text else type(exc).__name__


# --- result ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BindResult:
    """The outcome of binding a name: a tree, or pending, or an error message."""

    tree: NameTree
    pending: bool = False
    error: str | None = None
    namers: frozenset = field(default_factory=frozenset, repr=False)  # namers consulted on the way

    @property
    def ok(self) -> bool:
        return not self.pending and self.error is None

    def bound_names(self) -> list[BoundName]:
        return [v for v in self.tree.leaves() if isinstance(v, BoundName)]

    def has_addresses(self) -> bool:
        """True when some reachable bound name currently holds at least one address."""
        names = self.tree.eval() or ()
        for name in names:
            if isinstance(name, BoundName):
                value = name.addr.value
                if isinstance(value, AddrBound) and value.addresses:
                    return True
        return False


# --- the interpreter --------------------------------------------------------------------------


class Interpreter:
    """linkerd's ``default`` interpreter over configured namers and transformers."""

    def __init__(self, namers: Sequence[Namer] = (), transformers: Sequence = ()):
        self.namers = tuple(namers)
        self.transformers = tuple(transformers)
        # Later configured namers are tried first (linkerd reverses the list).
        self._lookup_order = tuple(
            (Path(CONFIGURED_NAMER_LABEL, *namer.prefix.labels), namer) for namer in reversed(self.namers)
        )

    @property
    def delegatable(self) -> bool:
        """False when a transformer cannot show its work in a delegation (linkerd → 501)."""
        return all(getattr(t, "delegating", True) for t in self.transformers)

    def add_listener(self, callback: Callable[[], None]) -> Closable:
        """Call ``callback()`` when any namer's (or transformer's) answers may have changed."""
        handles = []
        for source in (*self.namers, *self.transformers):
            add = getattr(source, "add_listener", None)
            if add is not None:
                handles.append(add(callback))

        def close_all() -> None:
            for h in handles:
                h.close()

        return Closable(close_all)

    # --- one step ------------------------------------------------------------------------------

    def lookup_namers(self, path: Path, consulted: set | None = None) -> LookupState:
        """Ask the configured namers, then the ``/$`` built-ins (no dtab)."""
        for full_prefix, namer in self._lookup_order:
            if not path.startswith(full_prefix):
                continue
            if consulted is not None:
                consulted.add(namer)
            try:
                answer = namer.lookup(path.drop(len(full_prefix)))
            except Exception as exc:  # a namer failure fails this lookup, not the process
                return LookupFailed(exception_message(exc))
            if answer is PENDING:
                return LookupPending
            if answer is Neg:
                continue
            return LookupOk(answer)
        try:
            return LookupOk(lookup_builtin(path))
        except (UnknownNamerError, BuiltinError) as exc:
            return LookupFailed(str(exc))

    def lookup(self, dtab: Dtab, path: Path, consulted: set | None = None) -> LookupState:
        """One rewriting step: the dtab, or (only if no entry matched) the namers."""
        tree = dtab.lookup(path)
        if tree is not Neg:
            return LookupOk(tree)
        return self.lookup_namers(path, consulted)

    # --- binding -------------------------------------------------------------------------------

    def bind(self, dtab: Dtab, path: Path) -> BindResult:
        consulted: set = set()
        state = _Binder(self, dtab, consulted).bind(Leaf(path), 0)
        namers = frozenset(consulted)
        if isinstance(state, LookupFailed):
            return BindResult(Neg, error=state.message, namers=namers)
        if state is LookupPending:
            return BindResult(Neg, pending=True, namers=namers)
        tree = state.tree
        try:
            for transformer in self.transformers:
                tree = transformer.transform(tree)
        except Exception as exc:
            return BindResult(Neg, error=exception_message(exc), namers=namers)
        return BindResult(tree, namers=namers)

    def bind_tree(self, dtab: Dtab, tree: NameTree) -> LookupState:
        """Bind an arbitrary tree of paths (no transformers); used by replace/const."""
        return _Binder(self, dtab, set()).bind(tree, 0)


class _Binder:
    """One bind run: memoises (path, depth) so self-referencing unions stay linear."""

    __slots__ = ("interp", "dtab", "consulted", "memo")

    def __init__(self, interp: Interpreter, dtab: Dtab, consulted: set):
        self.interp = interp
        self.dtab = dtab
        self.consulted = consulted
        self.memo: dict[tuple[Path, int], LookupState] = {}

    def bind(self, tree: NameTree, depth: int) -> LookupState:
        if depth > MAX_DEPTH:
            return LookupFailed(MAX_DEPTH_MESSAGE)
        if isinstance(tree, Leaf):
            value = tree.value
            if isinstance(value, Path):
                return self._bind_path(value, depth)
            return LookupOk(tree)  # already bound
        if tree is Neg or tree is Fail or tree is Empty:
            return LookupOk(tree)
        if isinstance(tree, Alt):
            if not tree.trees:
                return LookupOk(Neg)
            for branch in tree.trees:
                state = self.bind(branch, depth)
                if not isinstance(state, LookupOk):
                    return state  # pending or failed: the Alt cannot decide yet
                if state.tree is Neg:
                    continue
                return state  # Fail stops the search; anything else is the answer
            return LookupOk(Neg)
        if isinstance(tree, Union):
            if not tree.weighted:
                return LookupOk(Neg)
            if len(tree.weighted) == 1:
                return self.bind(tree.weighted[0].tree, depth)
            oks: list[Weighted] = []
            first_failure: LookupFailed | None = None
            for member in tree.weighted:
                state = self.bind(member.tree, depth)
                if isinstance(state, LookupOk):
                    oks.append(Weighted(member.weight, state.tree))
                elif isinstance(state, LookupFailed) and first_failure is None:
                    first_failure = state
            if not oks:
                return first_failure if first_failure is not None else LookupPending
            return LookupOk(Union(tuple(oks)).simplified)
        raise TypeError(f"not a name tree: {tree!r}")

    def _bind_path(self, path: Path, depth: int) -> LookupState:
        key = (path, depth)
        memo = self.memo.get(key)
        if memo is not None:
            return memo
        step = self.interp.lookup(self.dtab, path, self.consulted)
        result = self.bind(step.tree, depth + 1) if isinstance(step, LookupOk) else step
        self.memo[key] = result
        return result
