"""A name that binds before its addresses are known (a k8s watch or a transformer's
gateway set still loading) waits like linkerd: the request is held, not answered 502,
and goes out as soon as the addresses arrive; past the binding timeout it gets 503.
Real sockets: an in-process router on uvloop, a real backend, a raw client."""

import asyncio

import uvloop

from fastmesh._core.pump import ServerCore
from fastmesh._core.stats import StatsArena
from fastmesh.identify import build_identifier
from fastmesh.naming import (AddrBound, Address, AddrPending, AddrVar, BoundName, Dtab,
                             Interpreter, Leaf, Path)
from fastmesh.router import Router
from tests.support import CaptureBackend


class SlowNamer:
    """A namer (our own extension point, not a fake of anything) whose one name is bound
    at once but whose addresses arrive later, as the k8s namer's do."""

    prefix = Path.read("/slow")

    def __init__(self):
        self.var = AddrVar(AddrPending)

    def lookup(self, path):
        return Leaf(BoundName(Path.read("/#/slow/x"), self.var, Path.empty))

    def add_listener(self, cb):
        class _C:
            def close(self):
                pass
        return _C()


async def _serve(router, loop):
    core = ServerCore(router, router.routes, router.arena.alloc("srv"), loop)
    server = await loop.create_server(core, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    return head


def _router(loop, namer, timeout_s):
    return Router("outgoing", dtab=Dtab.read("/svc => /#/slow;"),
                  identifier=build_identifier(None, Path.read("/svc")),
                  interpreter=Interpreter([namer]), loop=loop, arena=StatsArena(16),
                  binding_timeout_s=timeout_s)


def test_pending_addresses_hold_the_request_until_they_arrive():
    backend = CaptureBackend()
    namer = SlowNamer()

    async def scenario():
        loop = asyncio.get_running_loop()
        router = _router(loop, namer, 5.0)
        server, port = await _serve(router, loop)
        loop.call_later(0.3, namer.var.set,
                        AddrBound(frozenset({Address("127.0.0.1", backend.port)})))
        t0 = loop.time()
        head = await _get(port)
        took = loop.time() - t0
        server.close()
        return head, took

    try:
        head, took = uvloop.run(scenario())
        assert head.startswith(b"HTTP/1.1 200"), head
        assert 0.25 < took < 3.0
        assert len(backend.requests) == 1
    finally:
        backend.close()


def test_addresses_that_never_arrive_time_out_with_503():
    namer = SlowNamer()

    async def scenario():
        loop = asyncio.get_running_loop()
        router = _router(loop, namer, 0.4)
        server, port = await _serve(router, loop)
        head = await _get(port)
        server.close()
        return head

    head = uvloop.run(scenario())
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"l5d-err: exceeded+400.milliseconds+to+unspecified+while+dyn+binding+%2Fsvc%2Fx" in head
