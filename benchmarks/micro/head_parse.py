"""Micro-benchmark: request-head work, fastmesh's Cython callbacks vs the plain-Python
reference proxy's httptools callbacks, by head size.

fastmesh exposes no Python entry point that runs only the head work (httptools →
``ServerConn.on_url/on_header/on_headers_complete`` → ``RequestHead.add_header/finish`` →
the forwarded head): those are reached only through a whole exchange. So this measures
the whole user-space cycle of ``request_path`` (the real protocol objects, in-memory
counting transports, no syscalls) with the smallest response (``Content-Length: 0``) and
varies only the request head:

* ``short``: ``GET /`` with ``Host`` (1 header line);
* ``browser20``: a browser-like head of 20 header lines (cookies, ``Sec-Fetch-*``, …);
* ``drop-keepalive``: ``Connection: keep-alive, X-Foo`` naming a header to drop;
* ``drop-close``: ``Connection: close, X-Foo``: the client connection closes after the
  response, so every request comes on a new client connection (made, used, lost) — that
  figure includes per-connection set-up and tear-down.

Everything except the head is the same between ``short`` and ``browser20``, so the
difference of their cycles over the 19 extra header lines is the cost of one header line
(tokenizing, the callback, the header work, the bytes written). Two context rows split
it: llhttp alone (a parser with no callbacks), and llhttp calling Python no-op callbacks —
what any design with Python-visible callbacks pays before doing any work.

    python -m benchmarks.micro.head_parse [--requests N] [--runs R]

CPU ns of this thread, medians of interleaved runs (fastmesh and the reference alternate
which goes first); ratios are reference/fastmesh (> 1: fastmesh is faster).
"""

from __future__ import annotations

import argparse

import httptools

from benchmarks.micro import request_path
from benchmarks.micro._common import BenchResult, CpuShare, median_figure, pin_to_one_cpu, print_result

MIN_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

SHORT = b"GET / HTTP/1.1\r\nHost: world\r\n\r\n"
BROWSER20 = (
    b"GET /articles/2026/11/mesh.html?ref=home HTTP/1.1\r\n"
    b"Host: world\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: http://world/index.html\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=3f9a1c7e5b2d4a60; theme=dark; consent=1\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-User: ?1\r\n"
    b"Priority: u=0, i\r\n"
    b"Cache-Control: max-age=0\r\n"
    b"DNT: 1\r\n"
    b"Sec-GPC: 1\r\n"
    b"If-None-Match: \"5f3c-61a2b9e0\"\r\n"
    b"If-Modified-Since: Fri, 27 Nov 2026 03:35:15 GMT\r\n"
    b"X-Request-Id: 7f9c2a1e-0b4d-4c6e-9a51-2d8e3f1b6c70\r\n"
    b"\r\n")
DROP_KEEPALIVE = (b"GET / HTTP/1.1\r\nHost: world\r\nConnection: keep-alive, X-Foo\r\n"
                  b"X-Foo: must-not-pass\r\nAccept: */*\r\n\r\n")
DROP_CLOSE = (b"GET / HTTP/1.1\r\nHost: world\r\nConnection: close, X-Foo\r\n"
              b"X-Foo: must-not-pass\r\nAccept: */*\r\n\r\n")


def header_lines(head: bytes) -> int:
    return head.count(b"\r\n") - 2  # minus the request line and the empty line


# (name, head, new client connection per request)
HEADS = [
    ("short", SHORT, False),
    ("browser20", BROWSER20, False),
    ("drop-keepalive", DROP_KEEPALIVE, False),
    ("drop-close", DROP_CLOSE, True),
]
assert header_lines(SHORT) == 1 and header_lines(BROWSER20) == 20


class _NoopCallbacks:
    """httptools callbacks that do nothing: the price of calling into Python per token."""

    def on_url(self, url):
        pass

    def on_header(self, name, value):
        pass

    def on_headers_complete(self):
        pass

    def on_message_complete(self):
        pass


def llhttp_alone(head: bytes, n: int, callbacks: bool, clock: CpuShare) -> float:
    """CPU ns per head for httptools' parser with no callbacks, or with Python no-ops."""
    parser = httptools.HttpRequestParser(_NoopCallbacks() if callbacks else object())
    feed = parser.feed_data

    def one():
        feed(head)
    for _ in range(min(1000, n)):
        one()
    return clock.loop(one, n)


def check_forwarding() -> None:
    """The heads must go through both proxies the way the benchmark assumes: X-Foo and
    Connection dropped, the other headers kept. Checked once, before measuring."""
    for setup in (request_path.fastmesh_setup, request_path.reference_setup):
        for name, head, reconnect in HEADS:
            one, check = setup(request=head, response=MIN_RESPONSE, reconnect=reconnect)
            one()
            check()
    captured = _forwarded_heads()
    for who, fwd in captured.items():
        low = fwd.lower()
        if b"x-foo" in low or b"\r\nconnection:" in low or b"must-not-pass" in low:
            raise AssertionError(f"{who} forwarded a header named in Connection: {fwd!r}")
        if b"\r\naccept: */*\r\n" not in low:
            raise AssertionError(f"{who} dropped a header it should keep: {fwd!r}")


def _forwarded_heads() -> dict[str, bytes]:
    """The upstream-bound bytes of DROP_KEEPALIVE through each proxy."""
    out = {}

    class Capture(request_path.CountingTransport):
        def __init__(self):
            super().__init__()
            self.data = b""

        def write(self, data):
            super().write(data)
            self.data += bytes(data)

    from benchmarks import ref_python_proxy as ref
    from fastmesh._core.pool import Client, Endpoint, Route
    from fastmesh._core.pump import ServerCore, UpstreamConn
    from fastmesh._core.stats import StatsArena

    arena = StatsArena(4)
    client = Client("/$/inet/10.0.0.2/4141", [])
    ep = Endpoint("10.0.0.2", 4141)
    client.set_endpoints([ep])
    core = ServerCore(None, {b"world": Route(clients=[client], service_show="/svc/world")},
                      arena.alloc("server"), None)
    down, up, up_t = core(), UpstreamConn(ep), Capture()
    down.connection_made(request_path.CountingTransport())
    up.connection_made(up_t)
    ep.idle.append(up)
    buf = down.get_buffer(-1)
    buf[:len(DROP_KEEPALIVE)] = DROP_KEEPALIVE
    down.buffer_updated(len(DROP_KEEPALIVE))
    out["fastmesh"] = up_t.data

    pool = ref.Pool(None, None, None)
    proxy = ref.Proxy(None, {b"world": ref.Route("10.0.0.2", 4141, b"/svc/world", b"/x")}, None, pool)
    rdown, rup, rup_t = ref.ClientConn(proxy), ref.UpstreamConn(pool, ("10.0.0.2", 4141)), Capture()
    rdown.connection_made(request_path.CountingTransport())
    rup.connection_made(rup_t)
    pool.release(rup)
    rdown.data_received(DROP_KEEPALIVE)
    out["python ref"] = rup_t.data
    return out


def run(requests: int = 30_000, runs: int = 5, verbose: bool = False) -> BenchResult:
    check_forwarding()
    fm: dict[str, list[float]] = {name: [] for name, _, _ in HEADS}
    py: dict[str, list[float]] = {name: [] for name, _, _ in HEADS}
    floor_bare: dict[str, list[float]] = {"short": [], "browser20": []}
    floor_cb: dict[str, list[float]] = {"short": [], "browser20": []}
    clock = CpuShare()
    for r in range(runs):
        for name, head, reconnect in HEADS:
            kwargs = {"request": head, "response": MIN_RESPONSE, "reconnect": reconnect}
            pair = [(fm, request_path.fastmesh_setup), (py, request_path.reference_setup)]
            for store, setup in (pair if r % 2 == 0 else pair[::-1]):
                store[name].append(request_path.measure(setup, requests, clock, **kwargs))
        for name, head in (("short", SHORT), ("browser20", BROWSER20)):
            floor_bare[name].append(llhttp_alone(head, requests, False, clock))
            floor_cb[name].append(llhttp_alone(head, requests, True, clock))
        if verbose:
            print(f"  run {r + 1}/{runs}: " + "  ".join(
                f"{name} {fm[name][-1]:.0f}/{py[name][-1]:.0f}" for name, _, _ in HEADS)
                + " ns (fastmesh/python ref)", flush=True)

    extra = header_lines(BROWSER20) - header_lines(SHORT)

    def per_header(store: dict[str, list[float]]) -> list[float]:
        # Paired within a run (measured back to back), then the median over runs.
        return [(b - s) / extra for s, b in zip(store["short"], store["browser20"])]

    figures = []
    labels = {"short": "short head (1 header), cycle", "browser20": "browser head (20 headers), cycle",
              "drop-keepalive": "Connection: keep-alive, X-Foo, cycle",
              "drop-close": "Connection: close, X-Foo, new conn each"}
    for name, _, _ in HEADS:
        figures.append(median_figure(labels[name], "ns/req", fm[name], py[name], "python ref"))
    figures.append(median_figure("per extra header line (browser20-short)/19", "ns/header",
                                 per_header(fm), per_header(py), "python ref", derived=True))
    figures.append(median_figure("  context: llhttp alone, no callbacks", "ns/header",
                                 per_header(floor_bare), None, derived=True))
    figures.append(median_figure("  context: llhttp + Python no-op callbacks", "ns/header",
                                 per_header(floor_cb), None, derived=True))
    figures.append(median_figure("context: llhttp alone, browser20 head", "ns/head",
                                 floor_bare["browser20"], None))
    return BenchResult(
        "head_parse", "request-head work by head size: whole user-space cycle with a "
        "Content-Length: 0 response (fastmesh has no head-only entry point)",
        {"requests": requests, "runs": runs},
        figures,
        ["ns are CPU time of this thread", clock.note(),
         "per-header rows are paired differences within each run, medians over runs",
         "llhttp rows are context (same parser in both proxies): no baseline, no ratio",
         "drop-close makes a new client connection per request in both proxies"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30_000, help="requests per run and head (default 30000)")
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs (default 5)")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 10_000_000 or not 1 <= args.runs <= 1000:
        ap.error("requests 1..10^7, runs 1..1000")
    pinned = pin_to_one_cpu()
    res = run(args.requests, args.runs, verbose=True)
    res.settings["cpu"] = pinned
    print_result(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
