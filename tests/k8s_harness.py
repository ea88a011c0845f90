"""Helpers of the io.l5d.k8s tests: one event loop per test, the fake API, waiting.

A test body is an ``async def`` run on a fresh uvloop by :func:`run` (bounded). :class:`Env`
starts a :class:`~k8s_fake.FakeKubeApi` on 127.0.0.1 (optionally loaded with fixtures)
and a namer talking to it, and counts the namer's listener calls. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, Awaitable, Callable

import uvloop
from k8s_fake import FakeKubeApi, fixture

from fastmesh.namers.k8s import K8sNamer
from fastmesh.naming import PENDING, AddrBound, Path

DEFAULT_TIMEOUT = 15.0


def run(fn: Callable[[], Awaitable[Any]], timeout: float = DEFAULT_TIMEOUT) -> Any:
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(fn(), timeout))
    finally:
        # as asyncio.run does: cancel what is left (server handlers, watch tasks), then close
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in left:
            t.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=5))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def P(text: str) -> Path:
    return Path.read(text)


def addrs(value) -> list[str]:
    """``ip:port`` of an AddrBound, sorted; or the state's repr."""
    if isinstance(value, AddrBound):
        return sorted(f"{a.host}:{a.port}" for a in value.addresses)
    return repr(value)


def endpoints(name: str, ready: list[tuple[str, str | None]], ports: dict[str, int], *,
              not_ready: list[tuple[str, str | None]] = (), labels: dict | None = None,
              namespace: str = "default") -> dict:
    """An Endpoints object in the API's shape (one subset)."""
    def addr(ip, node):
        a = {"ip": ip}
        if node:
            a["nodeName"] = node
        return a

    subset: dict[str, Any] = {}
    if ready:
        subset["addresses"] = [addr(ip, n) for ip, n in ready]
    if not_ready:
        subset["notReadyAddresses"] = [addr(ip, n) for ip, n in not_ready]
    subset["ports"] = [{"name": k, "port": v, "protocol": "TCP"} for k, v in ports.items()]
    obj = {"kind": "Endpoints", "apiVersion": "v1",
           "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
           "subsets": [subset] if (ready or not_ready) else []}
    return obj


def with_subsets(obj: dict, subsets) -> dict:
    out = copy.deepcopy(obj)
    if subsets is None:
        out.pop("subsets", None)
    else:
        out["subsets"] = subsets
    return out


class Env:
    """A fake API server and a namer on it (``async with Env(...) as env``)."""

    def __init__(self, *, lists: tuple[str, ...] = ("endpoints-list-default.json",),
                 label_selector: str | None = None, start_namer: bool = True, **namer_kw):
        self.lists = lists
        self.label_selector = label_selector
        self.start_namer = start_namer
        self.namer_kw = namer_kw
        self.changes = 0
        self._changed: asyncio.Event | None = None

    async def __aenter__(self) -> "Env":
        self.fake = await FakeKubeApi().start()
        for name in self.lists:
            self.fake.load("endpoints", fixture(name))
        self.namer = K8sNamer("127.0.0.1", self.fake.port, label_selector=self.label_selector,
                              **self.namer_kw)
        self._changed = asyncio.Event()
        self.namer.add_listener(self._on_change)
        if self.start_namer:
            self.namer.start(asyncio.get_running_loop())
        return self

    async def __aexit__(self, *exc) -> None:
        self.namer.close()
        await self.fake.stop()

    def _on_change(self) -> None:
        self.changes += 1
        self._changed.set()

    async def resolve(self, path: str, timeout: float = 5.0):
        """Look ``path`` up until it is no longer pending (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            tree = self.namer.lookup(P(path))
            if tree is not PENDING:
                return tree
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{path} still pending after {timeout}s; "
                                   f"state: {self.namer.state()['watches']}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))
            except asyncio.TimeoutError:
                pass

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise TimeoutError(f"not reached within {timeout}s: {what}")
            await asyncio.sleep(0.005)

    def watch(self, name: str, resource: str = "endpoints", label_value: str | None = None):
        watch = self.namer.object_watch(resource, "default", name, label_value)
        assert watch is not None, f"no watch of {resource}/{name}"
        return watch
