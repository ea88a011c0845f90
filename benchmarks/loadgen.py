"""Open-loop load at a fixed rate, with latency counted from the scheduled send time.

A closed-loop tool (wrk) sends the next request only when a connection is free, so a slow
response delays the requests that would have measured it ("coordinated omission") and
latency at saturation is mostly queueing (p50 ≈ connections / rate). This generator fixes
the schedule up front: request k is due at ``t0 + k / rate``. A due request goes out on an
idle connection at once, or waits in a FIFO until one is free; its latency is measured
from its *due* time, so waiting caused by a slow proxy is charged to the proxy.

Bounded in count (``rate * duration``, capped by ``--max-requests``) and in time (the run
ends ``--grace`` seconds after the last due time; requests still open then are reported
as incomplete and enter the percentiles at their lower-bound latency, so a stalled proxy
cannot look fast). One uvloop, N keep-alive connections, httptools for the responses.

The event loop wakes on libuv timers (millisecond resolution) and whenever a response
arrives; ``generator_lag`` reports how late the generator noticed each due request (its
own share of the latency: timer granularity and its CPU), apart from the time a request
then waited for a free connection (``queue_wait``, caused by the proxy's slowness).

Prints one JSON object: rate, counts, latency percentiles, generator lag and queue wait (µs).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time

import httptools
import uvloop

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil without floats drifting
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def summarize(values_us: list[float]) -> dict[str, float]:
    vals = sorted(values_us)
    out = {f"p{p:g}": round(percentile(vals, p), 1) for p in PERCENTILES}
    out["max"] = round(vals[-1], 1) if vals else 0.0
    out["mean"] = round(sum(vals) / len(vals), 1) if vals else 0.0
    return out


class Conn(asyncio.Protocol):
    def __init__(self, gen: "Generator") -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0  # due time of the request in flight (0: idle)
        self.alive = False

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        self.alive = True

    def connection_lost(self, exc):  # type: ignore[override]
        self.alive = False
        self.gen.conn_lost(self)

    def data_received(self, data):  # type: ignore[override]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def send(self, due: float) -> None:
        self.due = due
        self.transport.write(self.gen.request)

    def on_message_complete(self) -> None:
        due, self.due = self.due, 0.0
        ok = self.parser.get_status_code() == 200
        if not self.parser.should_keep_alive():
            self.transport.close()
        self.gen.completed(self, due, ok)


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.request = (
            f"GET {args.path} HTTP/1.1\r\nHost: {args.host_header}\r\nUser-Agent: fastmesh-loadgen\r\n\r\n"
        ).encode()
        self.total = int(min(args.max_requests, args.rate * args.duration))
        self.interval = 1.0 / args.rate
        self.conns: list[Conn] = []  # every connection made (to find in-flight ones at the end)
        self.idle: list[Conn] = []
        self.waiting: collections.deque[float] = collections.deque()  # due times not yet sent
        self.latencies: list[float] = []  # µs, from due time to response complete
        self.lags: list[float] = []  # µs, from due time to when the generator noticed it
        self.waits: list[float] = []  # µs, from noticing to the write (no idle connection)
        self.next_index = 0
        self.t0 = 0.0
        self.ok = self.bad = self.lost = 0
        self.last_done = 0.0
        self.reconnects_left = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = 0.0
        self.done = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def connect_one(self) -> None:
        host, port = self.args.target
        _, conn = await asyncio.wait_for(self.loop.create_connection(lambda: Conn(self), host, port), 5.0)
        self.conns.append(conn)
        self.idle.append(conn)

    async def run(self) -> dict:
        self.loop = asyncio.get_running_loop()
        self.reconnects_left = 10 * self.args.connections
        await asyncio.gather(*(self.connect_one() for _ in range(self.args.connections)))
        self.t0 = time.perf_counter() + 0.01
        self.pump()
        end_by = self.args.duration + self.args.grace + 0.01
        try:
            await asyncio.wait_for(self.done.wait(), end_by)
        except asyncio.TimeoutError:
            pass
        finished = time.perf_counter()
        if self.timer is not None:
            self.timer.cancel()
        # Requests never answered: charge them their lower-bound latency.
        incomplete = 0
        busy = [c.due for c in self.conns if c.due]
        for due in [*busy, *self.waiting]:
            self.latencies.append((finished - due) * 1e6)
            incomplete += 1
        unsent = self.total - self.next_index
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        elapsed = (max(self.last_done, self.t0) - self.t0) if self.ok + self.bad else 0.0
        return {
            "target": f"{self.args.target[0]}:{self.args.target[1]}",
            "rate": self.args.rate,
            "connections": self.args.connections,
            "scheduled": self.total,
            "completed": self.ok + self.bad,
            "ok": self.ok,
            "non_200": self.bad,
            "incomplete": incomplete,
            "never_scheduled": unsent,
            "connections_lost": self.lost,
            "achieved_rps": round((self.ok + self.bad) / elapsed, 1) if elapsed > 0 else 0.0,
            "latency_us": summarize(self.latencies),
            "generator_lag_us": summarize(self.lags),
            "queue_wait_us": summarize(self.waits),
        }

    def pump(self) -> None:
        """Move due requests to the waiting FIFO and send as many as connections allow."""
        now = time.perf_counter()
        while self.next_index < self.total:
            due = self.t0 + self.next_index * self.interval
            if due > now:
                break
            self.lags.append((now - due) * 1e6)
            self.waiting.append(due)
            self.next_index += 1
        while self.waiting and self.idle:
            conn = self.idle.pop()
            if not conn.alive:
                continue
            due = self.waiting.popleft()
            self.waits.append(max(0.0, (now - due) * 1e6 - self.lags[len(self.waits)]))
            conn.send(due)
        if self.next_index < self.total:
            due = self.t0 + self.next_index * self.interval
            if self.timer is None or due < self.timer_due:
                if self.timer is not None:
                    self.timer.cancel()
                self.timer_due = due
                self.timer = self.loop.call_later(max(0.0, due - now), self._on_timer)
        elif not self.waiting and len(self.latencies) == self.total:
            self.done.set()

    def _on_timer(self) -> None:
        self.timer = None
        self.pump()

    def completed(self, conn: Conn, due: float, ok: bool) -> None:
        now = time.perf_counter()
        self.last_done = now
        self.latencies.append((now - due) * 1e6)
        if ok:
            self.ok += 1
        else:
            self.bad += 1
        if conn.alive:
            self.idle.append(conn)
        self.pump()

    def conn_lost(self, conn: Conn) -> None:
        if conn.due:
            self.lost += 1
            self.bad += 1
            self.latencies.append((time.perf_counter() - conn.due) * 1e6)
            conn.due = 0.0
        if self.reconnects_left > 0 and not self.done.is_set():
            self.reconnects_left -= 1
            self.loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self.connect_one()
        except (OSError, asyncio.TimeoutError):
            return
        self.pump()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, type=_hostport, help="HOST:PORT to connect to")
    ap.add_argument("--host-header", default="world")
    ap.add_argument("--path", default="/")
    ap.add_argument("--rate", type=float, required=True, help="requests per second (fixed schedule)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of schedule")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--max-requests", type=int, default=2_000_000, help="hard cap on requests")
    ap.add_argument("--grace", type=float, default=2.0, help="seconds to wait for stragglers")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections <= 0:
        raise SystemExit("--rate, --duration and --connections must be positive")
    gen = Generator(args)
    result = uvloop.run(gen.run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
