"""Micro-benchmark: the user-space cost of one proxied request, Cython core vs the
plain-Python reference proxy (benchmarks/ref_python_proxy.py), with no syscalls.

Both proxies are driven through their real protocol objects — the same callbacks uvloop
calls — with in-memory transports that only count the bytes written. One iteration is a
keep-alive request arriving from the client (parsed, routed by Host through a warm route
cache, forwarded on a pooled upstream connection) plus its response coming back
(parsed, re-framed, written to the client, the connection returned to the pool). What
remains is exactly the per-request Python/C work the kernel-level benchmark cannot
isolate: the "Python-level HTTP handling" of style-anchors §5.

    python -m benchmarks.micro.request_path [--requests N] [--runs R]

Reports CPU ns per request for each (this thread's CPU time, so that other processes on
a shared CPU do not count), medians of interleaved runs, and the ratio. It pins
itself to one CPU (the highest allowed; `taskset -c 1` chooses); run it on a quiet
machine for stable figures. `run()` is what `python -m benchmarks.micro` calls.
"""

from __future__ import annotations

import argparse

from benchmarks.micro._common import BenchResult, CpuShare, median_figure, pin_to_one_cpu, print_result

REQUEST = (b"GET http://world/ HTTP/1.1\r\nHost: world\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\nl5d-ctx-thing: 1\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 03:35:15 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
            b"Hello world!")


class CountingTransport:
    """What a protocol needs of a transport, minus the socket: writes are counted."""

    def __init__(self):
        self.written = 0
        self.closed = False

    def write(self, data):
        self.written += len(data)

    def writelines(self, chunks):
        for c in chunks:
            self.write(c)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return default

    def get_write_buffer_size(self):
        return 0


def fastmesh_setup(request: bytes = REQUEST, response: bytes = RESPONSE, reconnect: bool = False):
    """One keep-alive cycle through fastmesh's ServerConn/UpstreamConn. With `reconnect`,
    every request comes on a new client connection (made, used once, lost), as a client
    sending `Connection: close` does; the upstream connection stays pooled."""
    import uvloop

    from fastmesh._core.pool import Client, Endpoint, Route
    from fastmesh._core.pump import ServerCore, UpstreamConn
    from fastmesh._core.stats import StatsArena

    loop = uvloop.new_event_loop()
    arena = StatsArena(16)
    client = Client("/$/inet/10.0.0.2/4141", [], stats=arena.alloc("client"))
    ep = Endpoint("10.0.0.2", 4141)
    client.set_endpoints([ep])
    route = Route(clients=[client], service_show="/svc/world", service_stats=arena.alloc("svc"))
    core = ServerCore(None, {b"world": route}, arena.alloc("server"), loop)
    down = core()
    down_t = CountingTransport()
    down.connection_made(down_t)
    up = UpstreamConn(ep)
    up_t = CountingTransport()
    up.connection_made(up_t)
    ep.idle.append(up)
    nreq, nresp = len(request), len(response)

    def one():
        d = down
        if reconnect:
            d = core()
            d.connection_made(down_t)
        buf = d.get_buffer(-1)
        buf[:nreq] = request
        d.buffer_updated(nreq)
        buf = up.get_buffer(-1)
        buf[:nresp] = response
        up.buffer_updated(nresp)
        if reconnect:
            d.connection_lost(None)

    def check():
        assert down_t.written > 0 and up_t.written > 0 and len(ep.idle) == 1, \
            (down_t.written, up_t.written, ep.idle)
        assert reconnect or not down_t.closed, "the keep-alive client connection was closed"
    return one, check


def reference_setup(request: bytes = REQUEST, response: bytes = RESPONSE, reconnect: bool = False):
    """The same cycle through benchmarks/ref_python_proxy.py's ClientConn/UpstreamConn."""
    import uvloop

    from benchmarks import ref_python_proxy as ref

    loop = uvloop.new_event_loop()
    pool = ref.Pool(loop, None, None)
    route = ref.Route("10.0.0.2", 4141, b"/svc/world", b"/$/inet/10.0.0.2/4141")
    proxy = ref.Proxy(loop, {b"world": route}, None, pool)
    down = ref.ClientConn(proxy)
    down_t = CountingTransport()
    down.connection_made(down_t)
    up = ref.UpstreamConn(pool, ("10.0.0.2", 4141))
    up_t = CountingTransport()
    up.connection_made(up_t)
    pool.release(up)

    def one():
        d = down
        if reconnect:
            d = ref.ClientConn(proxy)
            d.connection_made(down_t)
        d.data_received(request)
        up.data_received(response)
        if reconnect:
            d.connection_lost(None)

    def check():
        assert down_t.written > 0 and up_t.written > 0 and len(pool.idle[("10.0.0.2", 4141)]) == 1
        assert reconnect or not down_t.closed, "the keep-alive client connection was closed"
    return one, check


def measure(setup, n: int, clock: CpuShare | None = None, **kwargs) -> float:
    """CPU ns per cycle of `setup(**kwargs)`'s one(), after a warm-up."""
    one, check = setup(**kwargs)
    for _ in range(min(1000, n)):  # warm up (route cache, allocator, branch predictors)
        one()
    check()
    ns = (clock or CpuShare()).loop(one, n)
    check()
    return ns


def run(requests: int = 100_000, runs: int = 5, verbose: bool = False) -> BenchResult:
    fm, py = [], []
    clock = CpuShare()
    for r in range(runs):  # interleaved, alternating which goes first
        first_fm = r % 2 == 0
        for which in ((fm, py) if first_fm else (py, fm)):
            which.append(measure(fastmesh_setup if which is fm else reference_setup, requests, clock))
        if verbose:
            print(f"  run {r + 1}/{runs}: fastmesh {fm[-1]:7.0f} ns/req   python {py[-1]:7.0f} ns/req",
                  flush=True)
    return BenchResult(
        "request_path", "request path, user space only (no syscalls): parse, route-cache hit, "
        "pool hit, forward, response parse, reuse",
        {"requests": requests, "runs": runs},
        [median_figure("keep-alive GET + 12-byte response", "ns/req", fm, py, "python ref")],
        ["ns are CPU time of this thread per request", clock.note()])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
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
