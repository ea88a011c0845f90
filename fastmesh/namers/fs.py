"""``io.l5d.fs``: service discovery from a directory of files (spec §2.2).

Role in the data path: each regular file under ``rootDir`` is a service named after the
file (subdirectories nest); its lines are the endpoints. Lookups answer from an
in-memory snapshot, so binding never touches the disk; a poller on the event loop
stats the tree every ~250 ms and re-reads files that changed.

File format: one ``host port`` or ``host port * weight`` per line (whitespace-separated),
``#`` comments to the end of the line, blank lines ignored, port 1..65535. Any bad line
makes the whole file ``AddrFailed("malformed address: <line>")``.

Lookup of ``/<name>/rest``: a file → a bound name with id ``/#/io.l5d.fs/<name>`` and
residual ``/rest``; a directory → the next label is looked up inside it; missing → Neg.

Stability: an edit that changes only the endpoints updates the file's one AddrVar in
place (route caches keep their clients); a file or directory appearing or disappearing
tells the listeners, so the router re-binds. A file that had addresses and suddenly reads
empty or malformed is believed only when the next poll reads the same: an in-place
rewrite (`echo ... > file` truncates first) caught half-way must not fail requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Callable

from fastmesh.naming.addr import (
    Address,
    AddrBound,
    AddrFailed,
    AddrNeg,
    AddrPending,
    AddrVar,
    BoundName,
    Closable,
    Meta,
    normalize_host,
)
from fastmesh.naming.namer import PENDING, Listeners
from fastmesh.naming.nametree import Leaf, NameTree, Neg
from fastmesh.naming.path import Path

log = logging.getLogger("fastmesh.namers.fs")

DEFAULT_PREFIX = Path.utf8("io.l5d.fs")
DEFAULT_POLL_INTERVAL = 0.25  # seconds; a file edit is visible within about this long
MAX_DEPTH = 32  # directory nesting we follow (guards against symlink loops)
MAX_FILE_BYTES = 4 * 1024 * 1024
HOLD_MAX_S = 1.0  # longest an empty/malformed read is held back while the file keeps changing
_PORT = re.compile(r"\+?[0-9]+")


def parse_addresses(text: str) -> AddrBound | AddrFailed:
    """The address state a file's text describes."""
    addresses = []
    for raw in text.split("\n"):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        address = _parse_line(line)
        if address is None:
            return AddrFailed(f"malformed address: {line}")
        addresses.append(address)
    return AddrBound(frozenset(addresses))


def _parse_line(line: str) -> Address | None:
    fields = line.split()
    if len(fields) == 2:
        host, port_text = fields
        weight = None
    elif len(fields) == 4 and fields[2] == "*":
        host, port_text, _, weight_text = fields
        try:
            weight = float(weight_text)
        except ValueError:
            return None
        if weight != weight or weight in (float("inf"), float("-inf")) or weight < 0:
            return None
    else:
        return None
    if not _PORT.fullmatch(port_text):
        return None
    port = int(port_text)
    if not 0 < port <= 65535:
        return None
    meta = Meta({"weight": repr(weight)}) if weight is not None else Meta()
    return Address(normalize_host(host), port, meta)


@dataclass
class _File:
    addr: AddrVar
    signature: tuple = ()
    read_at: float = 0.0
    held: bytes | None = None  # suspicious content seen once and not applied yet
    held_at: float = 0.0


@dataclass
class _Dir:
    children: dict[str, "_File | _Dir"] = field(default_factory=dict)
    signature: tuple = ()


class FsNamer:
    """The ``io.l5d.fs`` namer over ``root_dir``; answers ``/#`` + ``prefix``."""

    kind = "io.l5d.fs"

    def __init__(self, root_dir: str, prefix: Path = DEFAULT_PREFIX, poll_interval: float = DEFAULT_POLL_INTERVAL):
        self.root_dir = os.path.abspath(root_dir)
        self.prefix = prefix
        self.poll_interval = poll_interval
        self._id_prefix = Path.utf8("#") + prefix
        self._root: _Dir | None = None  # None until the first scan: lookups are PENDING
        self._listeners = Listeners()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.scans = 0

    # --- namer protocol ------------------------------------------------------------------------

    def lookup(self, path: Path) -> NameTree:
        node: _Dir | _File | None = self._root
        if node is None:
            return PENDING
        for index, label in enumerate(path.labels):
            name = label.decode("utf-8", "replace")
            node = node.children.get(name)
            if node is None:
                return Neg
            if isinstance(node, _File):
                return Leaf(BoundName(self._id_prefix + path.take(index + 1), node.addr, path.drop(index + 1)))
        return Neg  # the path ended on a directory

    def add_listener(self, callback: Callable[[], None]) -> Closable:
        return self._listeners.add(callback)

    # --- watching ---------------------------------------------------------------------------------

    def load_now(self) -> bool:
        """Scan the tree synchronously; True when names appeared or disappeared."""
        now = time.time()
        old = self._root
        new = self._scan_dir(self.root_dir, old, now, 0)
        self.scans += 1
        if new is None:
            # The root is gone or unreadable: every name is negative until it returns.
            new = _Dir()
        changed = old is None or _shape(old) != _shape(new)
        if old is not None:
            _retire_missing(old, new)
        self._root = new
        if changed:
            self._listeners.fire()
        return changed

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Begin polling on ``loop`` (the running loop by default)."""
        if self._root is None:
            self.load_now()
        self._loop = loop or asyncio.get_running_loop()
        self._closed = False
        self._schedule()

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        if not self._closed and self._loop is not None and not self._loop.is_closed():
            self._handle = self._loop.call_later(self.poll_interval, self._poll)

    def _poll(self) -> None:
        self._handle = None
        try:
            self.load_now()
        except Exception:  # never let one bad scan stop the watch
            log.exception("io.l5d.fs: scanning %s failed", self.root_dir)
        self._schedule()

    # --- introspection (admin) ----------------------------------------------------------------------

    def names(self) -> list[Path]:
        """The ids of every file-backed name (for /bound-names.json)."""
        out: list[Path] = []

        def walk(node: _Dir, base: Path) -> None:
            for name, child in sorted(node.children.items()):
                p = base + Path.utf8(name)
                if isinstance(child, _File):
                    out.append(p)
                else:
                    walk(child, p)

        if self._root is not None:
            walk(self._root, self._id_prefix)
        return out

    def state(self) -> dict:
        """Watch state for /namer_state/io.l5d.fs.json (informational shape)."""
        from fastmesh.naming.delegator import addr_json

        files = {}

        def walk(node: _Dir, rel: str) -> None:
            for name, child in sorted(node.children.items()):
                key = f"{rel}/{name}"
                if isinstance(child, _File):
                    files[key] = addr_json(child.addr.value)
                else:
                    walk(child, key)

        if self._root is not None:
            walk(self._root, "")
        return {"rootDir": self.root_dir, "prefix": self.prefix.show, "scans": self.scans, "files": files}

    # --- scanning -------------------------------------------------------------------------------------

    def _scan_dir(self, dirpath: str, old: _Dir | None, now: float, depth: int) -> _Dir | None:
        try:
            st = os.stat(dirpath)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        result = _Dir(signature=(st.st_ino, st.st_mtime_ns))
        if depth > MAX_DEPTH:
            return result
        try:
            entries = list(os.scandir(dirpath))
        except OSError:
            return None
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # hidden files, and Kubernetes' ..data / ..<timestamp> mount internals
            before = old.children.get(name) if old is not None else None
            try:
                is_dir = entry.is_dir()  # follows symlinks, like ConfigMap mounts need
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir:
                sub = self._scan_dir(entry.path, before if isinstance(before, _Dir) else None, now, depth + 1)
                if sub is not None:
                    result.children[name] = sub
            elif is_file:
                result.children[name] = self._scan_file(entry.path, before if isinstance(before, _File) else None, now)
        return result

    def _scan_file(self, filepath: str, old: _File | None, now: float) -> _File:
        try:
            st = os.stat(filepath)
        except OSError as exc:
            var = old.addr if old is not None else AddrVar(AddrPending)
            var.set(AddrFailed(str(exc)))
            return _File(var, (), now)
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if old is not None and old.signature == signature and not _racy(st.st_mtime_ns, old.read_at):
            return old
        var = old.addr if old is not None else AddrVar(AddrPending)
        try:
            with open(filepath, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES)
        except OSError as exc:
            var.set(AddrFailed(str(exc)))
        else:
            state = parse_addresses(data.decode("utf-8", "replace"))
            if old is not None and _half_written(old, var.value, state, data, now):
                # Keep serving the previous addresses and look again at the next poll.
                if old.held is None:
                    old.held_at = now
                old.held, old.signature = data, ()
                return old
            var.set(state)
        if old is not None:
            old.signature, old.read_at, old.held = signature, now, None
            return old
        return _File(var, signature, now)


def _half_written(old: _File, current, new, data: bytes, now: float) -> bool:
    """True when a file that had addresses now reads as empty or malformed for the first
    time: an in-place rewrite (truncate, then write) caught half-way looks exactly like
    that, and applying it would fail every request until the next poll. The same content
    read again one poll later (or after HOLD_MAX_S of churn) is taken as meant."""
    if not (isinstance(current, AddrBound) and current.addresses):
        return False
    if not (isinstance(new, AddrFailed) or (isinstance(new, AddrBound) and not new.addresses)):
        return False
    if old.held is None:
        return True
    return old.held != data and now - old.held_at < HOLD_MAX_S


def _racy(mtime_ns: int, read_at: float) -> bool:
    """A file modified within ~2 s of our last read may have changed again in the same
    timestamp tick (coarse file-system clocks), so its content must be re-checked."""
    return mtime_ns / 1e9 >= read_at - 2.0


def _shape(node: _Dir | _File):
    """What the name tree looks like, ignoring file contents."""
    if isinstance(node, _File):
        return "file"
    return {name: _shape(child) for name, child in node.children.items()}


def _retire_missing(old: _Dir | _File, new: _Dir | _File | None) -> None:
    """Files that vanished (or became directories) answer Neg to whoever still holds them."""
    if isinstance(old, _File):
        if not (isinstance(new, _File) and new.addr is old.addr):
            old.addr.set(AddrNeg)
        return
    for name, child in old.children.items():
        replacement = new.children.get(name) if isinstance(new, _Dir) else None
        _retire_missing(child, replacement)
