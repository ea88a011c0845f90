"""The optional HTTP access log (router key ``httpAccessLog``): one JSON line per request.

Role in the data path: after an exchange ends, the Cython core calls
``Router.log_access(conn)`` (only when an access log is configured), which hands
``conn.exchange_summary()`` plus the router label to ``AccessLog.write``. That call only
appends the encoded line to a buffer; the event loop writes the buffer out every
``flush_interval_s`` (100 ms) or as soon as ``flush_bytes`` (64 KB) are waiting. No threads.

The file is opened ``O_WRONLY|O_APPEND|O_NONBLOCK``: on a pipe or FIFO a full pipe gives
EAGAIN instead of blocking, and the loop's writer callback (``add_writer``) flushes the
rest as soon as the reader makes room; on a regular file the kernel writes into the page
cache. Either way the buffer is bounded
(``max_buffer_bytes``, 4 MB): when the disk (or the reader of the pipe) cannot keep up,
new lines are dropped and counted (``lines_dropped``) rather than stalling the proxy, and
a warning says so at most every 10 s. A write error (disk full, EIO) drops the buffered
lines, counts them and keeps going.

Each line is an object with ``ts`` (UTC, ISO 8601 with milliseconds) followed by the
summary's fields: ``method``, ``uri``, ``host``, ``status``, ``duration_us``, ``service``,
``client``, ``endpoint``, ``router``. linkerd 1.x writes an Apache-style line instead;
fastmesh writes JSON on purpose (machine-readable, no quoting rules to guess).

Only ``httpAccessLogRollPolicy: never`` is supported; other roll policies raise
NotSupportedError at start (use logrotate with ``copytruncate``: the file is O_APPEND).
``httpAccessLogAppend: false`` truncates the file at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

from fastmesh.errors import NotSupportedError

log = logging.getLogger("fastmesh.accesslog")

FLUSH_INTERVAL_S = 0.1
FLUSH_BYTES = 64 * 1024
MAX_BUFFER_BYTES = 4 * 1024 * 1024
MAX_WRITES_PER_FLUSH = 8          # bound the time one flush spends in the loop
WARN_EVERY_S = 10.0


def _timestamp(now: float) -> str:
    dt = datetime.fromtimestamp(now, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class AccessLog:
    """A buffered, non-blocking JSON-lines writer flushed from the event loop."""

    def __init__(self, fd: int, path: str, *, loop: asyncio.AbstractEventLoop | None = None,
                 flush_interval_s: float = FLUSH_INTERVAL_S, flush_bytes: int = FLUSH_BYTES,
                 max_buffer_bytes: int = MAX_BUFFER_BYTES):
        self.fd = fd
        self.path = path
        self.loop = loop
        self.flush_interval_s = flush_interval_s
        self.flush_bytes = flush_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._writer_armed = False      # waiting for the loop to say the fd is writable
        self._last_warning = 0.0
        self.lines_queued = 0        # accepted into the buffer
        self.lines_dropped = 0       # refused (buffer full) or lost to a write error
        self.bytes_written = 0
        self.write_errors = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one request's line; never blocks (drops and counts when full)."""
        if self._closed:
            self.lines_dropped += 1
            return
        line = json.dumps({"ts": _timestamp(time.time()), **entry}, separators=(",", ":"),
                          ensure_ascii=False, default=str).encode("utf-8") + b"\n"
        if len(self._buf) + len(line) > self.max_buffer_bytes:
            self.lines_dropped += 1
            self._warn("access log %s cannot keep up: dropped %d lines so far",
                       self.path, self.lines_dropped)
            return
        self._buf += line
        self.lines_queued += 1
        if self._writer_armed:
            return                          # the writable callback flushes
        if len(self._buf) >= self.flush_bytes:
            self.flush()
        else:
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or self._closed:
            return
        loop = self.loop
        if loop is None:
            try:
                loop = self.loop = asyncio.get_running_loop()
            except RuntimeError:
                # Not inside an event loop (a script): lines go out once flush_bytes
                # are waiting, and at close().
                return
        self._timer = loop.call_later(self.flush_interval_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._writer_armed:
            self.flush()

    def _wait_writable(self) -> bool:
        """Flush again when the fd (a pipe, a FIFO) can take more; False if it cannot be polled."""
        if self._writer_armed:
            return True
        loop = self.loop
        if loop is None:
            try:
                loop = self.loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
        try:
            loop.add_writer(self.fd, self._on_writable)
        except (OSError, ValueError, NotImplementedError):
            return False                    # not pollable: the timer retries
        self._writer_armed = True
        return True

    def _on_writable(self) -> None:
        self._disarm_writer()
        self.flush()

    def _disarm_writer(self) -> None:
        if self._writer_armed:
            self._writer_armed = False
            self.loop.remove_writer(self.fd)

    def flush(self) -> None:
        """Write what the file takes now; keep the rest for the next flush."""
        writes = 0
        while self._buf and writes < MAX_WRITES_PER_FLUSH:
            writes += 1
            try:
                n = os.write(self.fd, self._buf)
            except BlockingIOError:
                # pipe full: the loop tells us when the reader made room
                if self._wait_writable():
                    return
                break
            except InterruptedError:
                continue
            except OSError as exc:
                lost = self._buf.count(b"\n")
                self.lines_dropped += lost
                self.write_errors += 1
                self._buf.clear()
                self._warn("access log %s: write failed (%s); dropped %d lines",
                           self.path, exc.strerror or exc, lost)
                break
            if n <= 0:
                break
            self.bytes_written += n
            del self._buf[:n]
        if self._buf and not self._writer_armed:
            self._schedule()

    def close(self) -> None:
        """Flush what can be written without blocking, then close the file."""
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._disarm_writer()
        self.flush()
        self._disarm_writer()
        if self._buf:
            self.lines_dropped += self._buf.count(b"\n")
            self._buf.clear()
        self._closed = True
        try:
            os.close(self.fd)
        except OSError:
            pass

    def _warn(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(msg, *args)


def open_access_log(path: str, *, append: bool = True, roll_policy: str = "never",
                    rotate_count: int = -1,
                    loop: asyncio.AbstractEventLoop | None = None) -> AccessLog:
    """Open `path` for the access log (the router's httpAccessLog* keys).

    Raises NotSupportedError for a roll policy other than "never", OSError (with the path)
    when the file cannot be opened — both at start, not on the first request.
    """
    if roll_policy != "never":
        raise NotSupportedError(
            f"httpAccessLogRollPolicy {roll_policy!r} is not supported (only 'never'; "
            "rotate with logrotate copytruncate)")
    if rotate_count != -1:
        raise NotSupportedError("httpAccessLogRotateCount is not supported (no rolling)")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
    if not append:
        flags |= os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open access log {path}: {exc.strerror}") from exc
    return AccessLog(fd, path, loop=loop)
