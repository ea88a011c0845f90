"""Harness shared by the end-to-end and proxy-contract tests: real sockets, real processes.

Role: the things that surround a fastmesh in a test — the "pods" behind it (an HTTP/1.1
origin that echoes, streams, captures raw bytes or misbehaves on purpose), a TCP relay
that records every byte crossing the mesh link, a strict HTTP/1.1 client reader that
keeps the exact bytes it consumed, TLS record parsing for the wiretap, RSS sampling and
fastmesh processes started and stopped by PID.

The origins and relays run on one background event loop (a thread of the test process),
so a test reads their counters directly. In netns mode a listening socket is created
inside a node's network namespace (setns on the calling thread, then back), so a "pod" of
node 2 really sits behind node 2's incoming router.

Every wait here is bounded; nothing kills a process it did not start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import hashlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import parse_qs, unquote_plus, urlsplit

import uvloop

# --------------------------------------------------------------------------- event loop


class BackgroundLoop:
    """A uvloop running in a daemon thread; `run()` executes a coroutine on it (bounded)."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="e2e-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 15.0) -> Any:
        async def _call() -> Any:
            return fn(*args)
        return self.run(_call(), timeout)

    def close(self) -> None:
        async def _cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=2) if tasks else None
        with contextlib.suppress(Exception):
            self.run(_cancel_all(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------- sockets

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the block with this thread inside network namespace `netns` (None: stay)."""
    if not netns:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def listen_socket(ip: str, port: int = 0, netns: str | None = None) -> socket.socket:
    """A listening TCP socket on ip:port (port 0: any free one), inside `netns` if given.

    A socket keeps the namespace it was created in, so after this returns it can be
    served from any thread of the root namespace."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(256)
    sock.setblocking(False)
    return sock


def free_port(ip: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for configs that need a number up front)."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def refusing_port(ip: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """A port bound but not listening: connects to it are refused, and nobody else can
    take it while the returned socket stays open."""
    s = socket.socket()
    s.bind((ip, 0))
    return s, s.getsockname()[1]


def wait_port(ip: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    err: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {ip}:{port} "
                               f"accepted; log:\n{tail(log)}")
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return
        except OSError as exc:
            err = exc
            time.sleep(0.02)
    raise TimeoutError(f"{ip}:{port} not accepting after {timeout}s ({err}); log:\n{tail(log)}")


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- payloads

_BLOCK = random.Random(20240611).randbytes(65536)


def pattern_chunks(total: int, chunk: int = 65536) -> Iterator[bytes]:
    """`total` deterministic bytes in pieces of `chunk`; block i starts with i (8 bytes)
    so a lost, repeated or reordered block changes the digest."""
    sent = 0
    i = 0
    while sent < total:
        block = i.to_bytes(8, "big") + _BLOCK[8:]
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        i += 1
        yield piece


def pattern_digest(total: int) -> str:
    h = hashlib.sha256()
    for piece in pattern_chunks(total):
        h.update(piece)
    return h.hexdigest()


# --------------------------------------------------------------------------- HTTP parsing


class IncompleteMessage(Exception):
    """The peer closed (or reset) the connection before the message was complete."""

    def __init__(self, what: str, raw: bytes) -> None:
        super().__init__(f"{what} (after {len(raw)} bytes)")
        self.raw = raw


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """(start line, [(name, value)]) of a head ending in CRLFCRLF; strict on syntax."""
    lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return lines[0].decode("latin-1"), headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name.lower()]
    if len(values) > 1:
        raise AssertionError(f"header {name} appears {len(values)} times: {values}")
    return values[0] if values else None


def header_all(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def l5d_err_text(value: str | None) -> str:
    """Decode an `l5d-err` header (URLEncoder form, ISO-8859-1)."""
    return unquote_plus(value or "", encoding="latin-1")


class SyncReader:
    """Buffered reads from a blocking socket; bytes read past a message stay in `buf` for
    the next one (pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise EOFError
        self.buf += data

    def readuntil(self, sep: bytes, limit: int = 1 << 20) -> bytes:
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError(f"no {sep!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(sep) + 1)
            self._fill()

    def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self, n: int) -> bytes:
        if not self.buf:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def at_eof(self, timeout: float) -> bool:
        """True if the peer closes (EOF or reset) within `timeout` with nothing more sent."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except (socket.timeout, TimeoutError):
            return False


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes                       # decoded (de-chunked) payload ("" when streamed)
    raw: bytes                        # the bytes of this response as received (body
                                      # data left out when streamed)
    interim: list[bytes] = field(default_factory=list)   # raw 1xx heads before it
    chunked: bool = False
    body_len: int = 0
    sha256: str = ""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        return header_all(self.headers, name)

    @property
    def l5d_err(self) -> str:
        return l5d_err_text(self.header("l5d-err"))

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(reader: SyncReader, *, method: str = "GET",
                  stream: bool = False) -> Response:
    """One HTTP/1.1 response, framed strictly (RFC 9112 §6.3); `stream` hashes the body
    instead of keeping it."""
    raw = bytearray()
    interim: list[bytes] = []
    try:
        while True:
            head = reader.readuntil(b"\r\n\r\n")
            raw += head
            start, headers = parse_head(head)
            version, _, rest = start.partition(" ")
            code, _, reason = rest.partition(" ")
            status = int(code)
            if 100 <= status < 200 and status != 101:
                interim.append(head)
                continue
            break
        h = hashlib.sha256()
        body = bytearray()
        length = 0

        def take(piece: bytes) -> None:
            nonlocal length
            h.update(piece)
            length += len(piece)
            if not stream:
                body.extend(piece)

        te = header(headers, "transfer-encoding")
        cl = header(headers, "content-length")
        chunked = False
        if method == "HEAD" or status in (204, 304):
            pass
        elif te is not None:
            if te.lower() != "chunked":
                raise ValueError(f"unexpected Transfer-Encoding {te!r}")
            if cl is not None:
                raise AssertionError("both Transfer-Encoding and Content-Length")
            chunked = True
            while True:
                line = reader.readuntil(b"\r\n", limit=4096)
                raw += line
                size = int(line[:-2].split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailer section
                        t = reader.readuntil(b"\r\n", limit=65536)
                        raw += t
                        if t == b"\r\n":
                            break
                    break
                left = size
                while left:
                    piece = reader.read_some(min(left, 262144))
                    left -= len(piece)
                    take(piece)
                    if not stream:
                        raw += piece
                crlf = reader.readexactly(2)
                raw += crlf
                if crlf != b"\r\n":
                    raise ValueError(f"chunk not followed by CRLF: {crlf!r}")
        elif cl is not None:
            left = int(cl)
            while left:
                piece = reader.read_some(min(left, 262144))
                left -= len(piece)
                take(piece)
                if not stream:
                    raw += piece
        else:
            # close-delimited
            while True:
                try:
                    piece = reader.read_some(262144)
                except EOFError:
                    break
                take(piece)
                if not stream:
                    raw += piece
    except (EOFError, ConnectionResetError) as exc:
        raise IncompleteMessage(f"connection ended mid-response ({type(exc).__name__})",
                                bytes(raw)) from exc
    return Response(status, reason, version, headers, bytes(body), bytes(raw), interim,
                    chunked, length, h.hexdigest())


def connect(ip: str, port: int, timeout: float = 10.0) -> tuple[socket.socket, SyncReader]:
    sock = socket.create_connection((ip, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, SyncReader(sock)


def exchange(ip: str, port: int, request: bytes, *, method: str = "GET",
             timeout: float = 10.0) -> Response:
    """One request on a fresh connection; the answer."""
    sock, reader = connect(ip, port, timeout)
    with sock:
        sock.sendall(request)
        return read_response(reader, method=method)


def dechunk(data: bytes) -> tuple[bytes, bytes]:
    """(payload, trailer section) of a complete chunked body; strict, ValueError if bad."""
    out = bytearray()
    i = 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        i = j + 2
        if size == 0:
            end = data.index(b"\r\n\r\n", i - 2) + 4 if data[i:i + 2] != b"\r\n" else i + 2
            if end != len(data):
                raise ValueError(f"{len(data) - end} bytes after the last chunk")
            return bytes(out), data[i:end]
        out += data[i:i + size]
        if data[i + size:i + size + 2] != b"\r\n":
            raise ValueError(f"chunk at {i} not followed by CRLF")
        i += size + 2


# --------------------------------------------------------------------------- origins


@dataclass
class SeenRequest:
    """A request as an origin received it from the proxy."""
    conn: int
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body_len: int = 0
    body_sha256: str = ""
    chunked: bool = False
    raw: bytes = b""           # the exact bytes of the request (capture origins only)

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}


Handler = Callable[["HttpOrigin", SeenRequest, asyncio.StreamReader, asyncio.StreamWriter],
                   Awaitable[bool]]


class HttpOrigin:
    """An HTTP/1.1 server on the background loop: the pod behind a fastmesh.

    Default answers: `/download/<n>` streams n pattern bytes (Content-Length, or chunked
    with `?chunked=1`) honouring backpressure; anything else is a JSON echo of what
    arrived (method, target, headers, body length and sha256). `?hold=<s>` stops reading
    the body for s seconds after the head; `Expect: 100-continue` gets `100 Continue`
    (unless `?no100=1`). `handlers` maps a path prefix to a coroutine that answers
    instead (returns False to close the connection afterwards). Bodies are hashed as they
    stream, never kept whole (except `raw` on capture origins, for small requests).
    """

    def __init__(self, name: str, *, handlers: dict[str, Handler] | None = None,
                 capture_raw: bool = False) -> None:
        self.name = name
        self.handlers = handlers or {}
        self.capture_raw = capture_raw
        self.connections = 0          # accepted so far
        self.open_connections = 0
        self.ended = 0                # connections that ended (EOF, reset or closed by us)
        self.requests: list[SeenRequest] = []
        self.heads = 0                # request heads seen (also of requests never finished)
        self.counters: collections.Counter[str] = collections.Counter()  # for handlers
        self.body_resumed_at: float | None = None
        self.address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket) -> "HttpOrigin":
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=1 << 20)
        self.address = sock.getsockname()[:2]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    @property
    def port(self) -> int:
        assert self.address is not None
        return self.address[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        conn_id = self.connections
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                req = await self._read_request(reader, writer, conn_id)
                if req is None:
                    break
                self.requests.append(req)
                keep = await self._answer(req, reader, writer)
                if not keep or (req.header("connection") or "").lower() == "close" \
                        or req.version == "HTTP/1.0":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            self.open_connections -= 1
            self.ended += 1
            self._writers.discard(writer)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            conn_id: int) -> SeenRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        self.heads += 1
        start, headers = parse_head(head)
        method, target, version = start.split(" ", 2)
        req = SeenRequest(conn_id, method, target, version, headers)
        raw = bytearray(head) if self.capture_raw else None
        hold = float(req.query.get("hold", "0") or 0)
        if hold:
            await asyncio.sleep(hold)
        self.body_resumed_at = time.monotonic()
        if (req.header("expect") or "").lower() == "100-continue" and not req.query.get("no100"):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        h = hashlib.sha256()
        n = 0
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te is not None:
            if te.lower() != "chunked":
                raise ValueError(f"unsupported Transfer-Encoding {te!r}")
            req.chunked = True
            while True:
                line = await reader.readuntil(b"\r\n")
                if raw is not None:
                    raw += line
                size = int(line[:-2].split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = await reader.readuntil(b"\r\n")
                        if raw is not None:
                            raw += t
                        if t == b"\r\n":
                            break
                    break
                left = size
                while left:
                    piece = await reader.read(min(left, 262144))
                    if not piece:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(piece)
                    n += len(piece)
                    h.update(piece)
                    if raw is not None:
                        raw += piece
                crlf = await reader.readexactly(2)
                if raw is not None:
                    raw += crlf
                if crlf != b"\r\n":
                    raise ValueError("chunk without CRLF")
        elif cl is not None:
            left = int(cl)
            while left:
                piece = await reader.read(min(left, 262144))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(piece)
                n += len(piece)
                h.update(piece)
                if raw is not None:
                    raw += piece
        req.body_len = n
        req.body_sha256 = h.hexdigest()
        if raw is not None:
            req.raw = bytes(raw)
        return req

    async def _answer(self, req: SeenRequest, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        for prefix, handler in self.handlers.items():
            if req.path.startswith(prefix):
                return await handler(self, req, reader, writer)
        if req.path.startswith("/download/"):
            await self._download(req, writer, int(req.path.rsplit("/", 1)[1]))
            return True
        body = json.dumps({
            "origin": self.name, "conn": req.conn, "method": req.method, "target": req.target,
            "version": req.version, "headers": req.headers, "body_len": req.body_len,
            "body_sha256": req.body_sha256, "chunked": req.chunked,
        }).encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Origin: {self.name}\r\n\r\n").encode()
        writer.write(head if req.method == "HEAD" else head + body)
        await writer.drain()
        return True

    async def _download(self, req: SeenRequest, writer: asyncio.StreamWriter, total: int) -> None:
        chunked = bool(req.query.get("chunked"))
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
        else:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         f"Content-Length: {total}\r\n\r\n".encode())
        for piece in pattern_chunks(total):
            if chunked:
                writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                writer.write(piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


def json_response(obj: Any, status: str = "200 OK") -> bytes:
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# --------------------------------------------------------------------------- relay


@dataclass
class RelayedConnection:
    """What one relayed connection carried, each direction as one byte stream."""
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    target: tuple[str, int] | None = None
    upstream_failed: str | None = None


class TcpRelay:
    """A plain TCP relay (a wiretap): forwards to `target`, records both directions.

    `target` may be changed at any time (new connections use it); `drop_all()` aborts
    every relayed connection, so pooled connections through the relay must reconnect."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connections = 0
        self.records: list[RelayedConnection] = []
        self.address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[Any] = set()

    async def start(self, sock: socket.socket) -> "TcpRelay":
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self.address = sock.getsockname()[:2]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()

    def drop_all(self) -> None:
        for t in list(self._transports):
            t.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        rec = RelayedConnection(target=self.target)
        self.records.append(rec)
        self._transports.add(writer.transport)
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=5)
        except (OSError, asyncio.TimeoutError) as exc:
            rec.upstream_failed = repr(exc)
            self._transports.discard(writer.transport)
            writer.transport.abort()
            return
        self._transports.add(up_writer.transport)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bytearray) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    log += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                # Either side gone: end both (a TLS peer has nothing to say half-closed).
                dst.transport.abort()
                src_t = writer.transport if dst is up_writer else up_writer.transport
                src_t.abort()

        try:
            await asyncio.gather(pump(reader, up_writer, rec.to_server),
                                 pump(up_reader, writer, rec.to_client))
        finally:
            self._transports.discard(writer.transport)
            self._transports.discard(up_writer.transport)


# --------------------------------------------------------------------------- TLS records

TLS_CHANGE_CIPHER_SPEC, TLS_ALERT, TLS_HANDSHAKE, TLS_APPLICATION_DATA = 20, 21, 22, 23


@dataclass
class TlsRecord:
    content_type: int
    version: int
    payload: bytes


def tls_records(stream: bytes | bytearray) -> list[TlsRecord]:
    """Split a byte stream into TLS records; ValueError unless it is exactly records."""
    out = []
    i = 0
    while i < len(stream):
        if len(stream) - i < 5:
            raise ValueError(f"{len(stream) - i} stray bytes at {i}")
        ctype = stream[i]
        version = int.from_bytes(stream[i + 1:i + 3], "big")
        length = int.from_bytes(stream[i + 3:i + 5], "big")
        if ctype not in (20, 21, 22, 23):
            raise ValueError(f"content type {ctype:#x} at {i} is not TLS")
        if length > 16384 + 2048:
            raise ValueError(f"record length {length} at {i} exceeds TLS limits")
        if i + 5 + length > len(stream):
            raise ValueError(f"record at {i} truncated ({length} announced)")
        out.append(TlsRecord(ctype, version, bytes(stream[i + 5:i + 5 + length])))
        i += 5 + length
    return out


def client_hello_sni(records: list[TlsRecord]) -> str | None:
    """The server_name in the ClientHello that starts a client's TLS stream."""
    hs = b"".join(r.payload for r in records[:4] if r.content_type == TLS_HANDSHAKE)
    if not hs or hs[0] != 1:
        raise ValueError("the stream does not start with a ClientHello")
    body = hs[4:4 + int.from_bytes(hs[1:4], "big")]
    p = 2 + 32                                      # legacy_version, random
    p += 1 + body[p]                                # session id
    p += 2 + int.from_bytes(body[p:p + 2], "big")   # cipher suites
    p += 1 + body[p]                                # compression methods
    end = p + 2 + int.from_bytes(body[p:p + 2], "big")
    p += 2
    while p < end:
        etype = int.from_bytes(body[p:p + 2], "big")
        elen = int.from_bytes(body[p + 2:p + 4], "big")
        data = body[p + 4:p + 4 + elen]
        if etype == 0:  # server_name: list length, then (type 0 host_name, length, name)
            q = 2
            while q < len(data):
                ntype, nlen = data[q], int.from_bytes(data[q + 1:q + 3], "big")
                if ntype == 0:
                    return data[q + 3:q + 3 + nlen].decode("ascii")
                q += 3 + nlen
        p += 4 + elen
    return None


class TlsImpostor:
    """A TLS server on the background loop with a certificate of our choosing; records
    the SNI of every ClientHello and any application bytes that get through."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda sslobj, name, ctx: self.sni.append(name)
        self.handshakes_ok = 0
        self.received = bytearray()
        self.address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket) -> "TlsImpostor":
        self._server = await asyncio.start_server(self._serve, sock=sock, ssl=self.ctx,
                                                  ssl_handshake_timeout=5)
        self.address = sock.getsockname()[:2]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes_ok += 1
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout=5)
            self.received += data
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nimpostor")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


# --------------------------------------------------------------------------- processes


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (fastmesh run forks one worker per CPU by default)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples VmRSS of some PIDs every `interval` s in a thread; `growth_mb()` per PID is
    the peak during sampling minus the level when sampling started."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.start_kb = {pid: vm_rss_kb(pid) for pid in pids}
        self.peak_kb = dict(self.start_kb)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self.pids:
                with contextlib.suppress(OSError, RuntimeError):
                    kb = vm_rss_kb(pid)
                    if kb > self.peak_kb[pid]:
                        self.peak_kb[pid] = kb
            self.samples += 1

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def growth_mb(self) -> dict[int, float]:
        return {pid: (self.peak_kb[pid] - self.start_kb[pid]) / 1024 for pid in self.pids}


class FastmeshProcess:
    """`python -m fastmesh run CONFIG` as a child of the test (own session), stopped by PID."""

    def __init__(self, config_text: str, workdir: Path, name: str = "fastmesh") -> None:
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(config_text)
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait_for: list[tuple[str, int]], timeout: float = 20.0) -> "FastmeshProcess":
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastmesh", "run", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for ip, port in wait_for:
                wait_port(ip, port, timeout, self.proc, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM to its process group (the parent and the workers it forked; the group
        is the one we created with the process), SIGKILL what is left after `grace`."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Workers still in the group keep its id from being reused, so it is still ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
