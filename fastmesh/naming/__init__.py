"""Naming: paths, dtabs, name trees, binding and delegation (pure Python, no I/O).

Role in the data path: everything between "this request is named /svc/world" and "send
it to these endpoints". The router calls :class:`Interpreter` ``.bind`` on a route-cache
miss and keeps the result; the admin server and the CLI call :func:`delegate` to show
the steps. See the submodules for the rules each one implements (spec §3, §5.4, §8.4).
"""

from .addr import (
    Addr,
    AddrBound,
    AddrFailed,
    AddrNeg,
    AddrPending,
    AddrVar,
    Address,
    BoundName,
    Closable,
    DerivedAddrVar,
    Meta,
    normalize_host,
)
from .builtins import UnknownNamerError, lookup_builtin
from .delegator import Delegation, addr_json, bound_json, delegate, delegation_to_cli_json, format_delegation
from .dtab import Dentry, Dtab, Prefix
from .interpreter import MAX_DEPTH, MAX_DEPTH_MESSAGE, BindResult, Interpreter
from .namer import PENDING, Listeners, Namer
from .nametree import DEFAULT_WEIGHT, Alt, Empty, Fail, Leaf, NameTree, Neg, Union, Weighted
from .path import ParseError, Path
from .transformers import Transformer, build_transformer

__all__ = [
    "Addr",
    "AddrBound",
    "AddrFailed",
    "AddrNeg",
    "AddrPending",
    "AddrVar",
    "Address",
    "Alt",
    "BindResult",
    "BoundName",
    "Closable",
    "DEFAULT_WEIGHT",
    "Delegation",
    "Dentry",
    "DerivedAddrVar",
    "Dtab",
    "Empty",
    "Fail",
    "Interpreter",
    "Leaf",
    "Listeners",
    "MAX_DEPTH",
    "MAX_DEPTH_MESSAGE",
    "Meta",
    "NameTree",
    "Namer",
    "Neg",
    "PENDING",
    "ParseError",
    "Path",
    "Prefix",
    "Transformer",
    "Union",
    "UnknownNamerError",
    "Weighted",
    "addr_json",
    "bound_json",
    "build_transformer",
    "delegate",
    "delegation_to_cli_json",
    "format_delegation",
    "lookup_builtin",
    "normalize_host",
]
