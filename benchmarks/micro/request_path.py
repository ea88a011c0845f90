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

Reports ns per request for each, medians of interleaved runs, and the ratio. Pin it to
one CPU (`taskset -c 1`) on a quiet machine for stable figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def fastmesh_setup():
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

    def one():
        buf = down.get_buffer(-1)
        buf[:len(REQUEST)] = REQUEST
        down.buffer_updated(len(REQUEST))
        u = ep.idle[-1] if ep.idle else up
        buf = u.get_buffer(-1)
        buf[:len(RESPONSE)] = RESPONSE
        up.buffer_updated(len(RESPONSE))

    def check():
        assert down_t.written > 0 and up_t.written > 0 and len(ep.idle) == 1, \
            (down_t.written, up_t.written, ep.idle)
    return one, check


def reference_setup():
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
        down.data_received(REQUEST)
        up.data_received(RESPONSE)

    def check():
        assert down_t.written > 0 and up_t.written > 0 and len(pool.idle[("10.0.0.2", 4141)]) == 1
    return one, check


def measure(setup, n: int) -> float:
    one, check = setup()
    for _ in range(1000):  # warm up (route cache, allocator, branch predictors)
        one()
    check()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        one()
    dt = time.perf_counter_ns() - t0
    check()
    return dt / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    fm, py = [], []
    for r in range(args.runs):  # interleaved A B A B
        fm.append(measure(fastmesh_setup, args.requests))
        py.append(measure(reference_setup, args.requests))
        print(f"  run {r + 1}/{args.runs}: fastmesh {fm[-1]:7.0f} ns/req   python {py[-1]:7.0f} ns/req",
              flush=True)
    f, p = statistics.median(fm), statistics.median(py)
    print(f"request path (no syscalls), median of {args.runs}: fastmesh {f:.0f} ns/req, "
          f"python reference {p:.0f} ns/req, ratio {p / f:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
