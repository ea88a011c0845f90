"""Parser for paths, name trees, dentries and dtabs (spec §3.1–§3.2).

Role in the data path: parses the router's dtab at start-up and every ``l5d-dtab`` /
``l5d-ctx-dtab`` header on a request (the callers cache results, see ``Dtab.read``).
A header that fails to parse gets a 400 whose ``l5d-err`` is this module's message, so
messages follow finagle's format exactly:
``<expected> expected but <found> found at '<input with the offending char in [brackets]>'``.

Grammar (whitespace and ``#``-to-end-of-line comments allowed between tokens)::

    dtab     ::= ( dentry ( ';' dentry )* )? ';'?
    dentry   ::= prefix '=>' tree
    prefix   ::= '/' | '/' pelem ( '/' pelem )*        pelem ::= '*' | label
    tree     ::= tree1 ( '|' tree1 )*                  -- Alt
    tree1    ::= weighted ( '&' weighted )*            -- Union
    weighted ::= ( number '*' )? simple
    simple   ::= '(' tree ')' | path | '!' | '~' | '$'
"""

from __future__ import annotations

import re

from .dtab import Dentry, Dtab, Prefix
from .nametree import DEFAULT_WEIGHT, Alt, Empty, Fail, Leaf, NameTree, Neg, Union, Weighted
from .path import SHOWABLE_CHARS, ParseError, Path

_EOI = None  # "end of input" marker for peek()
_HEX = frozenset("0123456789abcdefABCDEF")
_SHOWABLE_RUN = re.compile(r"[0-9A-Za-z_:.#$%-]+")
# Java's Character.isWhitespace: ASCII controls \t-\r and \x1c-\x1f, and Unicode
# separators except the non-breaking ones.
_JAVA_WS_ASCII = frozenset(" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f")
_NOT_JAVA_WS = frozenset("\x85\xa0\u2007\u202f")


def _is_ws(c: str) -> bool:
    if c in _JAVA_WS_ASCII:
        return True
    return ord(c) > 127 and c.isspace() and c not in _NOT_JAVA_WS


def _is_label_char(c) -> bool:
    return c is not None and (c in SHOWABLE_CHARS or c == "\\")


class _Parser:
    __slots__ = ("s", "i", "n")

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.n = len(text)

    # --- primitives ----------------------------------------------------------------------

    def peek(self):
        return self.s[self.i] if self.i < self.n else _EOI

    def at_end(self) -> bool:
        return self.i >= self.n

    def illegal(self, expected: str, found: str | None) -> ParseError:
        """The error for ``found`` (a character, or None at the end) where ``expected`` was due."""
        shown = "end of input" if found is None else f"'{found}'"
        s, i = self.s, self.i
        display = f"{s}[]" if i >= self.n else f"{s[:i]}[{s[i]}]{s[i + 1:]}"
        return ParseError(f"{expected} expected but {shown} found at '{display}'", i)

    def maybe_eat(self, c: str) -> bool:
        if self.i < self.n and self.s[self.i] == c:
            self.i += 1
            return True
        return False

    def eat(self, c: str) -> None:
        if not self.maybe_eat(c):
            raise self.illegal(f"'{c}'", self.peek())

    def eat_ws(self) -> None:
        s, n = self.s, self.n
        i = self.i
        while i < n:
            c = s[i]
            if c == "#":
                # A comment runs to the end of the line (the newline is eaten too).
                j = s.find("\n", i)
                i = n if j < 0 else j + 1
            elif _is_ws(c):
                i += 1
            else:
                break
        self.i = i

    def ensure_end(self) -> None:
        if not self.at_end():
            raise self.illegal("end of input", self.peek())

    # --- tokens --------------------------------------------------------------------------

    def parse_label(self) -> bytes:
        out = bytearray()
        s = self.s
        while True:
            c = self.peek()
            if c is not None and c in SHOWABLE_CHARS:
                m = _SHOWABLE_RUN.match(s, self.i)
                out += m.group().encode("ascii")
                self.i = m.end()
            elif c == "\\":
                self.i += 1
                self.eat("x")
                hi = self.parse_hex()
                lo = self.parse_hex()
                out.append(int(hi + lo, 16))
            else:
                raise self.illegal("label char", c)
            if not _is_label_char(self.peek()):
                return bytes(out)

    def parse_hex(self) -> str:
        c = self.peek()
        if c is not None and c in _HEX:
            self.i += 1
            return c
        raise self.illegal("hex char", c)

    def parse_path(self) -> Path:
        self.eat_ws()
        self.eat("/")
        if not _is_label_char(self.peek()):
            return Path.empty
        labels = [self.parse_label()]
        while self.maybe_eat("/"):
            labels.append(self.parse_label())
        return Path(*labels)

    def parse_prefix(self) -> Prefix:
        self.eat_ws()
        self.eat("/")
        c = self.peek()
        if not (_is_label_char(c) or c == "*"):
            return Prefix()
        elems: list[bytes | None] = []
        while True:
            if self.maybe_eat("*"):
                elems.append(None)
            else:
                elems.append(self.parse_label())
            if not self.maybe_eat("/"):
                return Prefix(*elems)

    def parse_number(self) -> float:
        start = self.i
        seen_dot = False
        while True:
            c = self.peek()
            if c is None or not (c.isascii() and (c.isdigit() or c == ".")):
                break
            if c == ".":
                if seen_dot:
                    raise self.illegal("number char", c)
                seen_dot = True
            self.i += 1
        text = self.s[start:self.i]
        if text == ".":
            raise self.illegal("weight", ".")
        return float(text)

    def parse_simple(self) -> NameTree:
        self.eat_ws()
        c = self.peek()
        if c == "(":
            self.i += 1
            tree = self.parse_tree()
            self.eat_ws()
            self.eat(")")
            return tree
        if c == "/":
            return Leaf(self.parse_path())
        if c == "!":
            self.i += 1
            return Fail
        if c == "~":
            self.i += 1
            return Neg
        if c == "$":
            self.i += 1
            return Empty
        raise self.illegal("simple", c)

    def parse_weighted(self) -> Weighted:
        self.eat_ws()
        c = self.peek()
        weight = DEFAULT_WEIGHT
        if c is not None and c.isascii() and (c.isdigit() or c == "."):
            weight = self.parse_number()
            self.eat_ws()
            self.eat("*")
            self.eat_ws()
        return Weighted(weight, self.parse_simple())

    def parse_tree1(self) -> NameTree:
        members = [self.parse_weighted()]
        self.eat_ws()
        while self.maybe_eat("&"):
            members.append(self.parse_weighted())
            self.eat_ws()
        if len(members) > 1:
            return Union(tuple(members))
        return members[0].tree

    def parse_tree(self) -> NameTree:
        trees = [self.parse_tree1()]
        self.eat_ws()
        while self.maybe_eat("|"):
            trees.append(self.parse_tree1())
            self.eat_ws()
        if len(trees) > 1:
            return Alt(tuple(trees))
        return trees[0]

    def parse_dentry(self) -> Dentry:
        prefix = self.parse_prefix()
        self.eat_ws()
        self.eat("=")
        self.eat(">")
        return Dentry(prefix, self.parse_tree())

    def parse_dtab(self) -> Dtab:
        entries = []
        while True:
            self.eat_ws()
            if not self.at_end():
                entries.append(self.parse_dentry())
                self.eat_ws()
            if not self.maybe_eat(";"):
                return Dtab(entries)


def _all(text: str, rule: str):
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    p = _Parser(text)
    result = getattr(p, rule)()
    p.eat_ws()
    p.ensure_end()
    return result


def parse_path(text: str) -> Path:
    return _all(text, "parse_path")


def parse_name_tree(text: str) -> NameTree:
    return _all(text, "parse_tree")


def parse_prefix(text: str) -> Prefix:
    return _all(text, "parse_prefix")


def parse_dentry(text: str) -> Dentry:
    return _all(text, "parse_dentry")


def parse_dtab(text: str) -> Dtab:
    return _all(text, "parse_dtab")
