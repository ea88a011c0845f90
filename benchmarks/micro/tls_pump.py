"""Micro-benchmark: body throughput through the proxy's TLS-server → plain-upstream pump
(the incoming router's job), fastmesh vs the plain-Python reference proxy, for 1 KB,
64 KB and 1 MB bodies, as responses (download) and as requests (upload).

One uvloop process on 127.0.0.1 holds everything:

    client ──TLS 1.3, keep-alive──▶ proxy (TLS server) ──plain, pooled──▶ backend

* backend: a small ``BufferedProtocol`` HTTP/1.1 server; ``GET /bytes/N`` answers N bytes
  with ``Content-Length``, a request body is read and counted; keep-alive;
* proxy ``fastmesh``: an incoming router built in-process from a linkerd-1.x config
  (``fastmesh.config.load_config`` + ``fastmesh.linker.Linker``), server TLS with
  ``certPath``/``keyPath``, dtab ``/svc/world => /$/inet/127.0.0.1/<backend>``;
* proxy ``python ref``: ``benchmarks/ref_python_proxy.py``'s ``ClientConn``/``Pool`` behind
  ``loop.create_server(ssl=…)``, as its ``main()`` builds node B;
* ``direct``: the same client talking TLS straight to the backend (a TLS listener of the
  same backend), no proxy — the part of the process's CPU that is not the proxy's;
* client: a ``BufferedProtocol`` over uvloop's TLS transport (the same ``SSLContext``
  for all three, verifying ``linkerd`` against the mesh CA) sending requests one after
  another on one warm keep-alive connection (handshake excluded), counting the bytes.

Certificates come fresh from ``fastmesh.certs.generate_mesh_certs`` in a temp dir.

Figures per direction and size, medians of interleaved rounds (the variants alternate
order each round): MB/s of body (wall clock), CPU µs per request of the whole process
(``time.process_time``: client + proxy + backend; the same client and backend in both),
and the CPU the proxy hop adds (the same round's ``direct`` run subtracted). Bounded: a
fixed number of requests per run, a timeout per request, a time budget for all rounds.

    python -m benchmarks.micro.tls_pump [--runs R] [--scale F] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import uvloop

from benchmarks.micro._common import BenchResult, Figure, median_figure, pin_to_one_cpu, print_result

SIZES = [("1 KB", 1024), ("64 KB", 64 * 1024), ("1 MB", 1024 * 1024)]
# Requests per run for each size at --scale 1 (each run is ~0.1-0.3 s on the dev VM).
REQUESTS = {1024: 2000, 64 * 1024: 400, 1024 * 1024: 40}
DIRECTIONS = ("download", "upload")
HOST = "world"
TLS_NAME = "linkerd"
REQUEST_TIMEOUT = 10.0  # s: a stuck proxy fails the run (plus PER_REQUEST_S per request)
PER_REQUEST_S = 0.05    # ~30x the slowest request here (1 MB through a proxy, ~1.5 ms)
MAX_HEAD = 64 * 1024

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*(?=\r\n|$)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


def _content_length(head: bytes) -> int | None:
    found = _CONTENT_LENGTH.findall(head)
    if len(found) != 1:
        return None
    return int(found[0])


class _Backend(asyncio.BufferedProtocol):
    """HTTP/1.1 origin: ``/bytes/N`` answers N bytes; request bodies are read and dropped."""

    responses: dict[int, bytes] = {}

    def __init__(self) -> None:
        self.view = memoryview(bytearray(256 * 1024))
        self.head = bytearray()
        self.body_left = 0
        self.in_body = False
        self.size = 0
        self.transport = None

    @classmethod
    def response(cls, size: int) -> bytes:
        if size not in cls.responses:
            cls.responses[size] = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                   b"Content-Length: %d\r\n\r\n" % size) + b"x" * size
        return cls.responses[size]

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        pos = 0
        while pos < nbytes:
            if self.in_body:
                take = min(self.body_left, nbytes - pos)
                self.body_left -= take
                pos += take
                if self.body_left == 0:
                    self._respond()
                continue
            self.head += self.view[pos:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self._refuse(b"431 Request Header Fields Too Large")
                return
            rest = len(self.head) - end - 4
            head = bytes(self.head[:end])
            self.head.clear()
            pos = nbytes - rest  # what follows the head is still in the view
            line = head.split(b"\r\n", 1)[0].split(b" ")
            length = _content_length(head)
            if len(line) != 3 or not line[1].startswith(b"/bytes/") or not line[1][7:].isdigit() \
                    or _CHUNKED.search(head) or (length is None and b"content-length" in head.lower()):
                self._refuse(b"400 Bad Request")
                return
            self.size = int(line[1][7:])
            self.body_left = length or 0
            self.in_body = True
            if self.body_left == 0:
                self._respond()

    def _respond(self) -> None:
        self.in_body = False
        self.transport.write(self.response(self.size))

    def _refuse(self, status: bytes) -> None:
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.close()


class _Client(asyncio.BufferedProtocol):
    """Sends one request at a time, reads each response to its Content-Length."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(256 * 1024))
        self.transport = None
        self.head = bytearray()
        self.body_left = -1  # -1: reading a response head
        self.expect = 0
        self.remaining = 0
        self.parts: tuple[bytes, ...] = ()
        self.done: asyncio.Future | None = None
        self.body_bytes = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def run(self, parts: tuple[bytes, ...], expect: int, count: int) -> asyncio.Future:
        self.parts, self.expect, self.remaining = parts, expect, count
        self.done = asyncio.get_running_loop().create_future()
        self._send()
        return self.done

    def _send(self) -> None:
        for part in self.parts:
            self.transport.write(part)

    def _fail(self, why: str) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError(why))
        self.transport.close()

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.done is None or self.done.done():
            self._fail("bytes arrived with no request outstanding")
            return
        if self.body_left < 0:
            self.head += self.view[:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self._fail("response head too large")
                return
            head = bytes(self.head[:end])
            extra = len(self.head) - end - 4
            self.head.clear()
            length = _content_length(head)
            if not head.startswith(b"HTTP/1.1 200 ") or length != self.expect:
                self._fail(f"unexpected response (wanted 200 with Content-Length {self.expect}): "
                           f"{head[:400]!r}")
                return
            self.body_left = length - extra
            self.body_bytes += extra
        else:
            self.body_left -= nbytes
            self.body_bytes += nbytes
        if self.body_left < 0:
            self._fail("more bytes than the Content-Length")
        elif self.body_left == 0:
            self.body_left = -1
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set_result(None)
            else:
                self._send()

    def connection_lost(self, exc) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc or ConnectionError("the proxy closed the connection"))


def _request(direction: str, size: int) -> tuple[tuple[bytes, ...], int]:
    """(bytes to send, expected response body size)."""
    if direction == "download":
        return (b"GET /bytes/%d HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % (size, HOST.encode()),), size
    head = (b"POST /bytes/0 HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % (HOST.encode(), size))
    return (head, b"y" * size), 0


@dataclass
class _Sample:
    wall: float  # s
    cpu: float   # s of process CPU (user + system)
    requests: int
    body_bytes: int


@dataclass
class _Stack:
    """One round's servers and one warm client connection per variant."""

    clients: dict[str, _Client] = field(default_factory=dict)
    closers: list = field(default_factory=list)  # callables; coroutine functions are awaited

    async def close(self) -> None:
        for close in self.closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(0.01)  # let the transports' close callbacks run


def _client_context(ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca)
    return ctx


def _stock_server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def fastmesh_config(backend_port: int, cert: str, key: str) -> str:
    return f"""\
admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: incoming
  dtab: /svc/{HOST} => /$/inet/127.0.0.1/{backend_port};
  servers:
  - ip: 127.0.0.1
    port: 0
    tls:
      certPath: {cert}
      keyPath: {key}
"""


async def _start(paths, variants: list[str]) -> _Stack:
    from benchmarks import ref_python_proxy as ref
    from fastmesh.config import load_config
    from fastmesh.linker import Linker

    loop = asyncio.get_running_loop()
    stack = _Stack()
    stock_server = _stock_server_context(str(paths.cert), str(paths.key))
    backend = await loop.create_server(_Backend, "127.0.0.1", 0)
    stack.closers.append(backend.close)
    backend_port = backend.sockets[0].getsockname()[1]
    ports = {}
    if "direct" in variants:
        backend_tls = await loop.create_server(_Backend, "127.0.0.1", 0, ssl=stock_server)
        stack.closers.append(backend_tls.close)
        ports["direct"] = backend_tls.sockets[0].getsockname()[1]
    if "fastmesh" in variants:
        config = load_config("tls_pump.yaml", text=fastmesh_config(backend_port, str(paths.cert), str(paths.key)))
        linker = Linker.build(config, loop)
        await linker.start(admin=False)
        stack.closers.append(lambda: linker.stop(0))
        ports["fastmesh"] = linker.servers[0].server.sockets[0].getsockname()[1]
    if "python ref" in variants:
        pool = ref.Pool(loop, None, None)
        proxy = ref.Proxy(loop, {HOST.encode(): ref._make_route(HOST, f"127.0.0.1:{backend_port}")}, None, pool)
        server = await loop.create_server(lambda: ref.ClientConn(proxy), "127.0.0.1", 0, ssl=stock_server)
        ports["python ref"] = server.sockets[0].getsockname()[1]

        def close_ref():
            server.close()
            for conns in pool.idle.values():
                for conn in list(conns):
                    conn.close()
        stack.closers.append(close_ref)
    client_ctx = _client_context(str(paths.ca_cert))
    for name in variants:
        _, client = await loop.create_connection(_Client, "127.0.0.1", ports[name], ssl=client_ctx,
                                                 server_hostname=TLS_NAME)
        stack.clients[name] = client
        stack.closers.insert(0, client.transport.close)
    return stack


async def _measure(client: _Client, direction: str, size: int, count: int) -> _Sample:
    parts, expect = _request(direction, size)
    warm = max(3, count // 10)  # the upstream connection, buffers, TCP windows
    await asyncio.wait_for(client.run(parts, expect, warm), REQUEST_TIMEOUT + PER_REQUEST_S * warm)
    client.body_bytes = 0
    w0, c0 = time.perf_counter(), time.process_time()
    await asyncio.wait_for(client.run(parts, expect, count), REQUEST_TIMEOUT + PER_REQUEST_S * count)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    moved = client.body_bytes if direction == "download" else size * count
    if direction == "download" and moved != size * count:
        raise RuntimeError(f"received {moved} body bytes, expected {size * count}")
    return _Sample(wall, cpu, count, moved)


def run(runs: int = 5, scale: float = 1.0, max_seconds: float = 120.0, verbose: bool = False,
        sizes: list[tuple[str, int]] | None = None, directions: tuple[str, ...] = DIRECTIONS) -> BenchResult:
    sizes = sizes or SIZES
    variants = ["fastmesh", "python ref", "direct"]
    counts = {size: max(2, int(REQUESTS.get(size, 100) * scale)) for _, size in sizes}
    samples: dict[tuple[str, str, int], list[_Sample]] = {
        (v, d, s): [] for v in variants for d in directions for _, s in sizes}
    rounds_done = 0
    negotiated: dict[str, str] = {}

    async def main(paths) -> None:
        # A fresh stack (backend, proxies, client connections) every round: the CPU cost
        # of large bodies on a loopback connection depends on that connection's history
        # (seen: up to 2x for one variant after a 1 MB transfer, likely the kernel's buffer
        # auto-tuning), so long-lived connections make the rounds correlated samples.
        nonlocal rounds_done
        deadline = time.monotonic() + max_seconds
        for r in range(runs):
            if r > 0 and time.monotonic() > deadline:
                break
            stack = await _start(paths, variants)
            try:
                for v, client in stack.clients.items():
                    cipher = client.transport.get_extra_info("cipher")
                    negotiated[v] = f"{cipher[1]} {cipher[0]}" if cipher else "unknown"
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for direction in directions:
                    for _, size in sizes:
                        for v in order:
                            samples[(v, direction, size)].append(
                                await _measure(stack.clients[v], direction, size, counts[size]))
            finally:
                await stack.close()
            rounds_done += 1
            if verbose:
                print(f"  round {rounds_done}/{runs} done", flush=True)

    with tempfile.TemporaryDirectory(prefix="fastmesh-bench-pump-") as tmp:
        from fastmesh import certs
        paths = certs.generate_mesh_certs(os.path.join(tmp, "mesh"))
        uvloop.run(main(paths))

    figures: list[Figure] = []
    shares = []
    for direction in directions:
        for label, size in sizes:
            fm, py, direct = (samples[(v, direction, size)] for v in variants)
            shares += [s.cpu / s.wall for v in variants for s in samples[(v, direction, size)] if s.wall > 0]
            name = f"{direction} {label}"

            def mbps(ss):
                return [s.body_bytes / s.wall / 1e6 for s in ss]

            def cpu_us(ss):
                return [s.cpu / s.requests * 1e6 for s in ss]
            figures.append(median_figure(f"{name}: body throughput", "MB/s", mbps(fm), mbps(py),
                                         "python ref", lower_is_better=False))
            figures.append(median_figure(f"{name}: process CPU per request", "CPU µs/req", cpu_us(fm),
                                         cpu_us(py), "python ref"))
            # Paired within a round: the direct run of the same round is subtracted.
            figures.append(median_figure(
                f"{name}:   added by the proxy hop (-direct)", "CPU µs/req",
                [a - d for a, d in zip(cpu_us(fm), cpu_us(direct))],
                [a - d for a, d in zip(cpu_us(py), cpu_us(direct))], "python ref", derived=True))
    share_note = (f"CPU share of the timed runs (process CPU / wall): median {statistics.median(shares):.2f}, "
                  f"lowest {min(shares):.2f}" if shares else "no runs")
    res = BenchResult(
        "tls_pump", "TLS server -> plain upstream pump: 1 KB / 64 KB / 1 MB bodies, one keep-alive "
        "client, everything in one uvloop process",
        {"rounds": rounds_done, "rounds_asked": runs, "requests_per_run": {label: counts[s] for label, s in sizes},
         "directions": list(directions), "max_seconds": max_seconds, "openssl": ssl.OPENSSL_VERSION,
         "tls": negotiated},
        figures,
        ["process CPU covers client + proxy + backend (one process); '-direct' subtracts the same "
         "round's client->backend TLS run, leaving what inserting the proxy costs", share_note])
    res.settings["direct_cpu_us_per_req"] = {
        f"{d} {label}": statistics.median(s.cpu / s.requests * 1e6 for s in samples[("direct", d, size)])
        for d in directions for label, size in sizes}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the requests per run (1 KB: 2000, 64 KB: 400, 1 MB: 40)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="start no round after this (default 120)")
    ap.add_argument("--direction", choices=("both",) + DIRECTIONS, default="both")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 100 or not 0.001 <= args.scale <= 100 or not 1 <= args.max_seconds <= 3600:
        ap.error("runs 1..100, scale 0.001..100, max-seconds 1..3600")
    pinned = pin_to_one_cpu()
    directions = DIRECTIONS if args.direction == "both" else (args.direction,)
    res = run(args.runs, args.scale, args.max_seconds, verbose=True, directions=directions)
    res.settings["cpu"] = pinned
    print_result(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
