"""The router's route cache, observed through real requests and the router's stats block.

Each test builds a real Linker inside its own uvloop (as `fastmesh run` does in
cli.run_single), with real echo backends and a real keep-alive client in the same loop,
and reads the router's counters (`{"kind":"router","rt":"out"}`: route_misses,
route_overrides, route_refreshes) from the Linker's stats arena. The interpreter's `bind`
is wrapped to count delegations, so "never delegates twice" is checked directly too.

Rules under test (DESIGN.md "the rule that makes it fast", spec §6.2): a request with no
override delegates once per name and then hits the cache; `l5d-dtab` / `l5d-ctx-dtab`
requests take the uncached path every time and never enter the cache; a namer change
updates cached routes in place (no flush, no new misses); a replaced dtab invalidates.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import uvloop
from naming_harness import HttpConn, free_port, serve_echo, write_atomically

from fastmesh._core.stats import SLOT_NAMES
from fastmesh.config import load_config
from fastmesh.linker import Linker
from fastmesh.naming import Dtab

ROUTER_KEY = json.dumps({"kind": "router", "rt": "out"}, sort_keys=True, separators=(",", ":"))
SLOTS = ("route_misses", "route_overrides", "route_refreshes")


class World:
    """Three echo backends (v1, v2, v3), an io.l5d.fs directory and one router `out`."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "disco"
        self.dir.mkdir()
        self.ports = {name: free_port() for name in ("v1", "v2", "v3")}
        self.router_port = free_port()
        self.linker: Linker | None = None
        self.servers = []
        self.binds = 0

    def addr_line(self, name: str) -> str:
        return f"127.0.0.1 {self.ports[name]}\n"

    async def start(self, dtab: str) -> None:
        for name, port in self.ports.items():
            self.servers.append(await serve_echo("127.0.0.1", port, name))
        config = load_config("inline.yaml", text=f"""\
admin: {{ip: 127.0.0.1, port: {free_port()}}}
namers:
- kind: io.l5d.fs
  rootDir: {self.dir}
routers:
- protocol: http
  label: out
  dtab: |
    {dtab}
  servers: [{{ip: 127.0.0.1, port: {self.router_port}}}]
""")
        self.linker = Linker.build(config, asyncio.get_running_loop())
        interp = self.router.interpreter
        real_bind = interp.bind

        def counting_bind(*args, **kw):
            self.binds += 1
            return real_bind(*args, **kw)

        interp.bind = counting_bind  # instrument only: every call still binds for real
        await self.linker.start(admin=False)

    @property
    def router(self):
        return self.linker.routers["out"]

    def stats(self) -> dict[str, int]:
        block = self.linker.arena.snapshot()[ROUTER_KEY]
        return {s: block[SLOT_NAMES[s]] for s in SLOTS}

    async def connect(self) -> HttpConn:
        return await HttpConn.open("127.0.0.1", self.router_port)

    async def stop(self) -> None:
        await self.linker.stop(0.1)
        for s in self.servers:
            s.close()


def run_world(tmp_path: Path, dtab: str, files: dict[str, str], scenario) -> None:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        world = World(tmp_path)
        for name, backend in files.items():
            (world.dir / name).write_text(world.addr_line(backend))
        await world.start(dtab)
        try:
            await asyncio.wait_for(scenario(world), 30)
        finally:
            await world.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


async def hammer(world: World, host: str, count: int, connections: int = 5,
                 headers: dict[str, str] | None = None) -> list:
    """`count` requests for `host` over `connections` concurrent keep-alive connections."""
    conns = [await world.connect() for _ in range(connections)]
    out = []

    async def worker(conn: HttpConn, n: int) -> None:
        for _ in range(n):
            out.append(await conn.request("/", host=host, headers=headers))

    share = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]
    try:
        await asyncio.gather(*(worker(c, n) for c, n in zip(conns, share)))
    finally:
        for c in conns:
            c.close()
    return out


async def eventually(predicate, timeout: float = 3.0) -> float:
    """Seconds until `predicate()` (a coroutine function) is true; fails after `timeout`."""
    started = time.monotonic()
    for _ in range(int(timeout / 0.02) + 1):
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout}s")


# --- tests -------------------------------------------------------------------------------------

def test_500_requests_for_one_host_delegate_once(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        before = world.stats()
        responses = await hammer(world, "x", 500)
        assert [r.status for r in responses] == [200] * 500
        assert {r.backend for r in responses} == {"v1"}
        after = world.stats()
        assert after["route_misses"] - before["route_misses"] == 1
        assert after["route_overrides"] == before["route_overrides"]
        assert world.binds == 1
        assert list(world.router.routes) == [b"x"]
        # a second name is one more miss, once
        more = await hammer(world, "y", 100, connections=3)
        assert {r.backend for r in more} == {"v2"}
        assert world.stats()["route_misses"] - before["route_misses"] == 2
        assert world.binds == 2

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {"x": "v1", "y": "v2"}, scenario)


def test_a_negative_name_is_cached_and_fixed_by_the_namer(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        first = await hammer(world, "later", 20, connections=2)
        assert {r.status for r in first} == {502}
        assert all(r.header("l5d-err") for r in first)
        assert world.stats()["route_misses"] == 1 and world.binds == 1
        refreshes = world.stats()["route_refreshes"]
        (world.dir / "later").write_text(world.addr_line("v3"))
        conn = await world.connect()

        async def served() -> bool:
            return (await conn.request("/", host="later")).backend == "v3"

        took = await eventually(served)
        conn.close()
        assert took < 1.0
        assert world.stats()["route_misses"] == 1, "re-bound in place, not flushed"
        assert world.stats()["route_refreshes"] > refreshes

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {}, scenario)


def test_overrides_take_the_uncached_path_every_time(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        warm = await hammer(world, "x", 10, connections=1)
        assert {r.backend for r in warm} == {"v1"}
        base = world.stats()
        binds = world.binds
        override = {"l5d-dtab": f"/svc/x => /$/inet/127.1/{world.ports['v2']}"}
        ctx = {"l5d-ctx-dtab": f"/svc/x => /$/inet/127.1/{world.ports['v3']}"}
        conn = await world.connect()
        seen = []
        for i in range(30):  # plain, user override, context override, plain, ...
            headers = [None, override, ctx][i % 3]
            seen.append((await conn.request("/", host="x", headers=headers)).backend)
        conn.close()
        assert seen == ["v1", "v2", "v3"] * 10
        after = world.stats()
        assert after["route_overrides"] - base["route_overrides"] == 20
        assert after["route_misses"] == base["route_misses"], "plain requests stayed cached"
        assert world.binds - binds == 20, "every override delegated, uncached"
        assert list(world.router.routes) == [b"x"]

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {"x": "v1"}, scenario)


def test_override_reaches_the_app_as_ctx_dtab_and_plain_requests_do_not(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        conn = await world.connect()
        dtab = f"/svc/x=>/$/inet/127.1/{world.ports['v2']}"
        over = await conn.request("/", host="x", headers={"l5d-dtab": dtab})
        plain = await conn.request("/", host="x")
        bad = await conn.request("/", host="x", headers={"l5d-dtab": "/svc/x => /a/"})
        after_bad = await conn.request("/", host="x")
        conn.close()
        seen = over.app_headers()
        assert over.backend == "v2"
        assert seen["l5d-ctx-dtab"] == [dtab] and "l5d-dtab" not in seen
        assert plain.backend == "v1" and "l5d-ctx-dtab" not in plain.app_headers()
        assert bad.status == 400 and bad.header("l5d-err")
        assert after_bad.backend == "v1", "the connection still serves after the 400"

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {"x": "v1"}, scenario)


def test_address_edit_updates_the_cached_route_in_place(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        await hammer(world, "x", 50, connections=2)
        assert world.stats()["route_misses"] == 1
        conn = await world.connect()
        write_atomically(world.dir / "x", world.addr_line("v2"))

        async def moved() -> bool:
            return (await conn.request("/", host="x")).backend == "v2"

        took = await eventually(moved)
        assert took < 1.0
        tail = [(await conn.request("/", host="x")).backend for _ in range(50)]
        conn.close()
        assert set(tail) == {"v2"}
        assert world.stats()["route_misses"] == 1 and world.binds == 1, \
            "an address change reaches the cached route's client; nothing re-binds"

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {"x": "v1"}, scenario)


def test_namer_shape_change_refreshes_without_new_misses(tmp_path: Path) -> None:
    # /svc/y prefers y-new, falling back on y-old while y-new does not exist (Alt on Neg)
    dtab = "/svc => /#/io.l5d.fs; /svc/y => /#/io.l5d.fs/y-new | /#/io.l5d.fs/y-old;"

    async def scenario(world: World) -> None:
        first = await hammer(world, "y", 200, connections=4)
        assert {r.backend for r in first} == {"v1"}
        base = world.stats()
        assert base["route_misses"] == 1
        (world.dir / "y-new").write_text(world.addr_line("v3"))
        conn = await world.connect()

        async def switched() -> bool:
            return (await conn.request("/", host="y")).backend == "v3"

        assert await eventually(switched) < 1.0
        mid = world.stats()
        assert mid["route_refreshes"] > base["route_refreshes"]
        assert mid["route_misses"] == 1, "refreshed in place, not flushed"
        (world.dir / "y-new").unlink()

        async def back() -> bool:
            return (await conn.request("/", host="y")).backend == "v1"

        assert await eventually(back) < 1.0
        conn.close()
        end = world.stats()
        assert end["route_refreshes"] > mid["route_refreshes"]
        assert end["route_misses"] == 1
        assert list(world.router.routes) == [b"y"]

    run_world(tmp_path, dtab, {"y-old": "v1"}, scenario)


def test_replaced_dtab_invalidates_and_rebinds_once(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        await hammer(world, "x", 20, connections=2)
        assert world.stats()["route_misses"] == 1
        router = world.router
        router.dtab = Dtab.read(f"/svc/x => /$/inet/127.1/{world.ports['v3']};")
        router.invalidate()
        after = await hammer(world, "x", 100, connections=4)
        assert {r.backend for r in after} == {"v3"}
        assert world.stats()["route_misses"] == 2, "one more delegation for the new dtab"
        assert world.binds == 2

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {"x": "v1"}, scenario)


@pytest.mark.parametrize("dtab,host,backend", [
    ("/svc => /#/io.l5d.fs; /svc/x => /#/io.l5d.fs/y;", "x", "v2"),   # later entry wins
    ("/svc/x => /#/io.l5d.fs/none | /#/io.l5d.fs/y;", "x", "v2"),      # alt falls back on neg
    ("/svc => /$/io.buoyant.hostportPfx/inet; /inet => /$/inet;", None, "v3"),  # Host host:port
])
def test_cached_routes_follow_the_dtab_rules(tmp_path: Path, dtab: str, host: str | None,
                                             backend: str) -> None:
    async def scenario(world: World) -> None:
        h = host or f"127.0.0.1:{world.ports['v3']}"
        responses = await hammer(world, h, 40, connections=2)
        assert {r.backend for r in responses} == {backend}
        assert world.stats()["route_misses"] == 1

    run_world(tmp_path, dtab, {"x": "v1", "y": "v2"}, scenario)


def test_keep_alive_survives_an_error_response(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        conn = await world.connect()
        try:
            # linkerd keeps a keep-alive connection after its own error responses
            err = await conn.request("/", host="nobody")
            assert err.status == 502 and (err.header("connection") or "").lower() != "close"
            assert (await conn.request("/", host="x")).backend == "v1"
            bad = await conn.request("/", host="x", headers={"l5d-dtab": "/x=>"})
            assert bad.status == 400
            assert (await conn.request("/", host="x")).backend == "v1"
        finally:
            conn.close()

    run_world(tmp_path, "/svc => /#/io.l5d.fs;", {"x": "v1"}, scenario)
