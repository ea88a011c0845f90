"""Hold many idle keep-alive client connections open on a proxy (to measure its memory).

Opens ``--count`` connections to ``--target`` (at most ``--concurrency`` handshakes at a
time), sends one GET on each and reads the whole response, so every connection is a real
keep-alive HTTP connection the proxy has parsed a request on (and, behind it, the
upstream pool has been used). Then it prints one JSON line ``{"open": n, "ok": m, ...}``
and holds the connections idle until its stdin closes or ``--hold`` seconds pass,
whichever is first. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httptools
import uvloop


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc):  # type: ignore[override]
        self.closed = True
        if not self.response.done():
            self.response.set_result(0)

    def data_received(self, data):  # type: ignore[override]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        if not self.response.done():
            self.response.set_result(self.parser.get_status_code())


async def open_all(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    host, port = args.target
    request = f"GET / HTTP/1.1\r\nHost: {args.host_header}\r\n\r\n".encode()
    sem = asyncio.Semaphore(args.concurrency)
    conns: list[Conn] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with sem:
            try:
                _, conn = await asyncio.wait_for(loop.create_connection(Conn, host, port), 10)
                conns.append(conn)
                conn.transport.write(request)
                await asyncio.wait_for(asyncio.shield(conn.response), 10)
            except (OSError, asyncio.TimeoutError):
                failed += 1

    await asyncio.gather(*(one() for _ in range(args.count)))
    ok = sum(1 for c in conns if c.response.done() and c.response.result() == 200 and not c.closed)
    print(json.dumps({"open": sum(not c.closed for c in conns), "ok": ok, "failed": failed}), flush=True)

    # Hold until stdin closes (the harness is done measuring) or the time bound.
    stdin_closed = loop.create_future()

    class StdinWatch(asyncio.Protocol):
        def connection_lost(self, exc):  # type: ignore[override]
            if not stdin_closed.done():
                stdin_closed.set_result(None)

    try:
        await loop.connect_read_pipe(StdinWatch, sys.stdin)
        await asyncio.wait_for(stdin_closed, args.hold)
    except (asyncio.TimeoutError, OSError, ValueError):
        pass
    for c in conns:
        if c.transport is not None:
            c.transport.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.idle_conns", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--host-header", default="world")
    ap.add_argument("--hold", type=float, default=120.0, help="seconds to hold at most")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    args.target = (host, int(port))
    if not 1 <= args.count <= 50_000:
        raise SystemExit("--count: 1..50000")
    uvloop.run(open_all(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
