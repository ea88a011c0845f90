"""Micro-benchmark: uvloop's TLS transport over fastmesh.tls's SSL objects (C read/write/
pending, no Python frame per call) vs stock ``ssl.SSLObject`` (Python wrappers).

What it measures: small-message request/response round trips on loopback, both ends in
one process on one uvloop loop, both ends ``BufferedProtocol`` (as fastmesh's pump), over
connections opened before the clock starts (handshakes excluded). The two variants use the
same certificates, TLS version and verification; they differ only in the SSL objects'
``read``/``write``/``pending``:

* ``stock``: ``ssl.SSLContext`` loaded from the same files (what uvloop normally gets);
* ``fastmesh``: ``fastmesh.tls.server_context`` / ``client_tls`` contexts.

Rounds alternate the order of the two variants and the medians are reported, with the
ratio fastmesh/stock (DESIGN.md: a benchmark states a ratio to a baseline run in the same
process). The process pins itself to one CPU. ``run()`` is what ``python -m
benchmarks.micro`` calls.

Run: ``python -m benchmarks.micro.tls_objects [--rounds 11] [--requests 20000]
[--connections 1] [--size 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import uvloop

from benchmarks.micro._common import BenchResult, median_figure, pin_to_one_cpu
from fastmesh import certs, tls


class _Echo(asyncio.BufferedProtocol):
    """Server side: writes back whatever arrives."""

    def __init__(self):
        self.view = memoryview(bytearray(64 << 10))

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.view[:nbytes]))


class _Pinger(asyncio.BufferedProtocol):
    """Client side: sends ``message``, waits for all of it back, repeats ``count`` times."""

    def __init__(self, message: bytes):
        self.message = message
        self.view = memoryview(bytearray(64 << 10))
        self.remaining = 0
        self.pending_bytes = 0
        self.done: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport

    def run(self, count: int) -> asyncio.Future:
        self.remaining = count
        self.done = asyncio.get_running_loop().create_future()
        self.pending_bytes = len(self.message)
        self.transport.write(self.message)
        return self.done

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.pending_bytes -= nbytes
        if self.pending_bytes > 0:
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set_result(None)
            return
        self.pending_bytes = len(self.message)
        self.transport.write(self.message)

    def connection_lost(self, exc):
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed"))


@dataclass(frozen=True)
class _Variant:
    name: str
    server: ssl.SSLContext
    client: ssl.SSLContext


def _variants(paths: certs.MeshCertPaths) -> list[_Variant]:
    stock_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    stock_server.load_cert_chain(paths.cert, paths.key)
    stock_server.set_alpn_protocols(tls.ALPN_PROTOCOLS)
    stock_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    stock_client.load_verify_locations(cafile=str(paths.ca_cert))
    stock_client.set_alpn_protocols(tls.ALPN_PROTOCOLS)
    mesh_client = tls.client_tls("linkerd", trust_certs=[str(paths.ca_cert)])
    return [_Variant("stock", stock_server, stock_client),
            _Variant("fastmesh", tls.server_context(paths.cert, paths.key), mesh_client.context)]


async def _run_once(variant: _Variant, connections: int, requests: int, size: int) -> tuple[float, float]:
    """(round trips per wall-clock second, per CPU second of this process) over
    ``connections`` concurrent connections."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=variant.server)
    port = server.sockets[0].getsockname()[1]
    message = b"x" * size
    pingers = []
    try:
        for _ in range(connections):
            transport, pinger = await loop.create_connection(
                lambda: _Pinger(message), "127.0.0.1", port, ssl=variant.client, server_hostname="linkerd")
            pingers.append(pinger)
        per_connection = max(1, requests // connections)
        # Warm up (TLS 1.3 tickets arrive after the handshake; first records allocate).
        await asyncio.gather(*(p.run(50) for p in pingers))
        start, start_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(p.run(per_connection) for p in pingers))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        for pinger in pingers:
            pinger.transport.close()
        server.close()
        await server.wait_closed()
    done = per_connection * connections
    return done / elapsed, done / max(cpu, 1e-9)


def _wrapper_calls_per_round_trip(variant: _Variant, size: int) -> float:
    """How many times per round trip (both ends) ssl.SSLObject's Python read/write/pending
    ran: what the fastmesh variant saves (it should be 0 there)."""
    codes = {ssl.SSLObject.read.__code__, ssl.SSLObject.write.__code__, ssl.SSLObject.pending.__code__}
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event == "call" and frame.f_code in codes:
            calls += 1

    async def measure():
        sys.setprofile(profile)
        try:
            await _run_once(variant, 1, 1000, size)
        finally:
            sys.setprofile(None)

    uvloop.run(measure())
    return calls / (1000 + 50)  # + the warm-up round trips


def measure(rounds: int, requests: int, connections: int, size: int
            ) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """Per variant, one (req/s wall, req per CPU-s) pair per round; and the Python-level
    SSLObject calls per round trip of each variant."""
    with tempfile.TemporaryDirectory(prefix="fastmesh-bench-tls-") as tmp:
        variants = _variants(certs.generate_mesh_certs(os.path.join(tmp, "mesh")))
        results: dict[str, list[tuple[float, float]]] = {v.name: [] for v in variants}

        async def all_rounds():
            for i in range(rounds):
                order = variants if i % 2 == 0 else variants[::-1]
                for variant in order:
                    results[variant.name].append(
                        await _run_once(variant, connections, requests, size))

        uvloop.run(all_rounds())
        wrapper_calls = {v.name: _wrapper_calls_per_round_trip(v, size) for v in variants}
    return results, wrapper_calls


def run(rounds: int = 11, requests: int = 20000, connections: int = 1, size: int = 64) -> BenchResult:
    """What `python -m benchmarks.micro` reports: medians, ratio fastmesh/stock."""
    results, wrapper_calls = measure(rounds, requests, connections, size)
    figures = []
    for index, unit, what in ((0, "req/s", "wall clock"), (1, "req/CPU-s", "per CPU second")):
        figures.append(median_figure(
            f"{size} B round trips, {connections} conn, {what}", unit,
            [v[index] for v in results["fastmesh"]], [v[index] for v in results["stock"]],
            "stock ssl", lower_is_better=False))
    return BenchResult(
        "tls_objects", "uvloop TLS round trips: fastmesh.tls SSL objects vs stock ssl.SSLObject",
        {"rounds": rounds, "requests": requests, "connections": connections, "size": size,
         "openssl": ssl.OPENSSL_VERSION},
        figures,
        ["Python-level SSLObject read/write/pending calls per round trip: "
         + ", ".join(f"{name} {calls:.2f}" for name, calls in wrapper_calls.items()),
         "CPU-second rates cover both ends (one process); they are the steadier figure on a "
         "shared CPU"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.tls_objects", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds (default 11)")
    parser.add_argument("--requests", type=int, default=20000, help="round trips per run (default 20000)")
    parser.add_argument("--connections", type=int, default=1, help="concurrent connections (default 1)")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 1000 or not 1 <= args.requests <= 10_000_000 or not 1 <= args.connections <= 1000:
        parser.error("rounds 1..1000, requests 1..10^7, connections 1..1000")

    pinned = pin_to_one_cpu()
    results, wrapper_calls = measure(args.rounds, args.requests, args.connections, args.size)

    print(f"TLS round trips over uvloop: {args.size}-byte messages, {args.connections} connection(s), "
          f"{args.requests} round trips x {args.rounds} interleaved rounds, {pinned}, "
          f"{ssl.OPENSSL_VERSION}, Python {sys.version.split()[0]}, uvloop {uvloop.__version__}")
    # Wall-clock rates suffer when another process shares the CPU; the CPU-time rate (user +
    # system time of this process, both ends included) is the steadier figure then.
    for index, unit in ((0, "req/s (wall)"), (1, "req per CPU-s")):
        medians = {name: statistics.median(v[index] for v in values) for name, values in results.items()}
        for name, values in results.items():
            rates = [v[index] for v in values]
            print(f"  {name:9s} median {medians[name]:9.0f} {unit:13s} ({1e6 / medians[name]:6.2f} us/req; "
                  f"min {min(rates):.0f}, max {max(rates):.0f})")
        saved = 1e6 / medians["stock"] - 1e6 / medians["fastmesh"]
        # Runs of one round are adjacent in time: their ratio cancels slow drifts in load.
        paired = statistics.median(f[index] / s[index] for f, s in zip(results["fastmesh"], results["stock"]))
        print(f"  fastmesh/stock = {medians['fastmesh'] / medians['stock']:.3f} "
              f"({saved:+.2f} us per round trip); median of per-round ratios {paired:.3f}")
    print("  Python-level SSLObject read/write/pending calls per round trip: "
          + ", ".join(f"{name} {calls:.2f}" for name, calls in wrapper_calls.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
