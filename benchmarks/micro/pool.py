"""Micro-benchmark: taking an idle upstream connection from the pool and giving it back,
fastmesh's endpoint pools vs the plain-Python reference proxy's ``Pool``.

fastmesh (pool.pyx/pump.pyx): the client's balancer picks an endpoint (power of two
choices over ``Client.endpoints``, the less loaded of two random ones; one endpoint is
returned directly), the request takes the newest idle connection of that endpoint
(``Endpoint.idle``, LIFO) and, when the response is done, appends it back. The request
path does this in C; no Python entry point runs only that, so it is driven here from
Python through the same objects: ``Client.pick_endpoint()`` (the C ``pick``),
``Endpoint.idle.pop()`` and ``.append()``. Those three are Python-level calls here and C
calls on the real path, so the fastmesh figure is an upper bound.

Reference (benchmarks/ref_python_proxy.py): ``Pool.acquire(key)`` / ``Pool.release(conn)``
exactly as its request path calls them (a dict of per-destination lists, liveness checks,
the idle cap). It has no balancer: one destination per route.

Cases: fastmesh over 1 endpoint and over 8 (p2c, with the monotonic clock read the real
pick makes), each against the reference's single destination. The cost of the Python
loop and one call (``one()`` doing nothing) is measured the same way and subtracted from
both. The miss path (no idle connection: a connect is started) needs an event loop and a
socket and is not measured here.

    python -m benchmarks.micro.pool [--pairs N] [--runs R]

CPU ns per acquire+release pair, medians of interleaved runs; ratio = reference/fastmesh.
"""

from __future__ import annotations

import argparse

from benchmarks.micro._common import BenchResult, CpuShare, median_figure, pin_to_one_cpu, print_result
from benchmarks.micro.request_path import CountingTransport


def fastmesh_setup(endpoints: int):
    from fastmesh._core.pool import Client, Endpoint
    from fastmesh._core.pump import UpstreamConn

    client = Client("/$/inet/10.0.0.1/4141", [])
    client.set_endpoints([Endpoint(f"10.0.0.{i + 1}", 4141) for i in range(endpoints)])
    for ep in client.endpoints:
        up = UpstreamConn(ep)
        up.connection_made(CountingTransport())
        ep.idle.append(up)
    pick = client.pick_endpoint
    picked = set()

    def one():
        ep = pick()
        idle = ep.idle
        up = idle.pop()  # acquire: the newest idle connection (LIFO)
        idle.append(up)  # release: back on top

    def check():
        for _ in range(50 * endpoints):
            picked.add(id(pick()))
        assert len(picked) == endpoints, "p2c never picked some endpoints"
        assert all(len(ep.idle) == 1 for ep in client.endpoints)
    return one, check


def reference_setup():
    from benchmarks import ref_python_proxy as ref

    pool = ref.Pool(None, None, None)
    key = ("10.0.0.1", 4141)
    conn = ref.UpstreamConn(pool, key)
    conn.connection_made(CountingTransport())
    pool.release(conn)
    acquire, release = pool.acquire, pool.release

    def one():
        c = acquire(key)
        release(c)

    def check():
        assert pool.idle[key] == [conn] and conn.in_pool
    return one, check


def empty_setup():
    def one():
        pass
    return one, lambda: None


def measure(setup, n: int, clock: CpuShare) -> float:
    one, check = setup()
    for _ in range(min(1000, n)):
        one()
    check()
    ns = clock.loop(one, n)
    check()
    return ns


def run(pairs: int = 1_000_000, runs: int = 5, verbose: bool = False) -> BenchResult:
    clock = CpuShare()
    cases = [("fm1", lambda: fastmesh_setup(1)), ("fm8", lambda: fastmesh_setup(8)),
             ("ref", reference_setup), ("empty", empty_setup)]
    raw: dict[str, list[float]] = {name: [] for name, _ in cases}
    for r in range(runs):
        for name, setup in (cases if r % 2 == 0 else cases[::-1]):
            raw[name].append(measure(setup, pairs, clock))
        if verbose:
            print(f"  run {r + 1}/{runs}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in raw.items())
                  + " ns/pair (loop included)", flush=True)
    # Net of the loop: subtract each run's own empty-loop figure (measured in that run).
    net = {name: [v - e for v, e in zip(raw[name], raw["empty"])] for name in ("fm1", "fm8", "ref")}
    figures = [
        median_figure("acquire+release, 1 endpoint", "ns/pair", net["fm1"], net["ref"], "python ref", derived=True),
        median_figure("acquire+release, 8 endpoints (p2c)", "ns/pair", net["fm8"], net["ref"], "python ref", derived=True),
        median_figure("context: Python loop + empty call (subtracted)", "ns/pair", raw["empty"], None),
    ]
    return BenchResult(
        "pool", "pool hit: acquire + release of an idle upstream connection",
        {"pairs": pairs, "runs": runs}, figures,
        ["ns are CPU time of this thread, net of the loop and call overhead", clock.note(),
         "fastmesh is driven through Python-level calls that are C calls on the real path "
         "(an upper bound); the reference has no balancer, so both fastmesh cases compare "
         "with its single-destination pool"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000, help="acquire+release pairs per run (default 10^6)")
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs (default 5)")
    args = ap.parse_args(argv)
    if not 1 <= args.pairs <= 100_000_000 or not 1 <= args.runs <= 1000:
        ap.error("pairs 1..10^8, runs 1..1000")
    pinned = pin_to_one_cpu()
    res = run(args.pairs, args.runs, verbose=True)
    res.settings["cpu"] = pinned
    print_result(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
