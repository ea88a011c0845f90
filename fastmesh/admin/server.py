"""The admin HTTP server (linkerd's :9990): routing of admin paths to handlers.

Not on the proxy's request path, so plain Python on asyncio/uvloop + httptools is enough.
Handlers are registered by path and category (linkerd's admin security model, spec §2.1:
"ui", "control", "diagnostics"); each returns an AdminResponse or awaits one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union
from urllib.parse import parse_qs, urlsplit

import httptools

from fastmesh.responses import reason_phrase

log = logging.getLogger("fastmesh.admin")


@dataclass
class AdminRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]          # lowercased names
    body: bytes = b""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class AdminResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain;charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, text: str, status: int = 200, **kw) -> "AdminResponse":
        return cls(status=status, body=text.encode("utf-8"), **kw)

    @classmethod
    def json_bytes(cls, body: bytes, status: int = 200) -> "AdminResponse":
        return cls(status=status, body=body, content_type="application/json")


Handler = Callable[[AdminRequest], Union[AdminResponse, Awaitable[AdminResponse]]]


@dataclass
class _Route:
    handler: Handler
    category: str      # "ui" | "control" | "diagnostics"
    prefix: bool       # match every path under this one


class AdminSecurity:
    """linkerd's admin `security` block: categories on/off plus regex allow/deny lists."""

    def __init__(self, ui: bool = True, control: bool = True, diagnostics: bool = True,
                 whitelist: tuple[str, ...] = (), blacklist: tuple[str, ...] = ()):
        self.enabled = {"ui": ui, "control": control, "diagnostics": diagnostics}
        self.whitelist = [re.compile(p) for p in whitelist]
        self.blacklist = [re.compile(p) for p in blacklist]

    def allows(self, path: str, category: str) -> bool:
        if self.enabled.get(category, True):
            return not any(p.fullmatch(path) for p in self.blacklist)
        return any(p.fullmatch(path) for p in self.whitelist)


class AdminServer:
    """Dispatches admin requests; `serve(loop, ip, port)` binds it."""

    def __init__(self, security: AdminSecurity | None = None):
        self.routes: dict[str, _Route] = {}
        self.security = security or AdminSecurity()
        self.server: asyncio.AbstractServer | None = None

    def add(self, path: str, handler: Handler, category: str = "diagnostics",
            prefix: bool = False) -> None:
        self.routes[path] = _Route(handler, category, prefix)

    def paths(self) -> list[str]:
        return sorted(self.routes)

    def _find(self, path: str) -> _Route | None:
        route = self.routes.get(path)
        if route is not None:
            return route
        best = None
        for p, r in self.routes.items():
            if r.prefix and path.startswith(p.rstrip("/") + "/") and (best is None or len(p) > len(best[0])):
                best = (p, r)
        return best[1] if best else None

    async def dispatch(self, req: AdminRequest) -> AdminResponse:
        route = self._find(req.path)
        if route is None or not self.security.allows(req.path, route.category):
            return AdminResponse.text("not found\n", 404)
        try:
            result = route.handler(req)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception:
            log.exception("admin handler for %s failed", req.path)
            return AdminResponse.text("internal error\n", 500)

    async def serve(self, loop, ip: str, port: int, ssl=None, reuse_port: bool = False):
        self.server = await loop.create_server(lambda: _AdminProtocol(self), ip, port, ssl=ssl,
                                               reuse_port=reuse_port)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class _AdminProtocol(asyncio.Protocol):
    """One admin connection: httptools parsing, one handler task per request, keep-alive."""

    def __init__(self, admin: AdminServer):
        self.admin = admin
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def connection_made(self, transport):
        self.transport = transport
        self._queue = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._serve())

    def connection_lost(self, exc):
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes):
        self._url += url

    def on_header(self, name: bytes, value: bytes):
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes):
        self._body.append(body)

    def on_message_complete(self):
        parts = urlsplit(self._url.decode("latin-1"))
        req = AdminRequest(method=self.parser.get_method().decode(), path=parts.path or "/",
                           query=parse_qs(parts.query), headers=self._headers,
                           body=b"".join(self._body))
        keep_alive = self.parser.should_keep_alive()
        self._url, self._headers, self._body = b"", {}, []
        self._queue.put_nowait((req, keep_alive))

    async def _serve(self):
        while True:
            req, keep_alive = await self._queue.get()
            resp = await self.admin.dispatch(req)
            head = [f"HTTP/1.1 {resp.status} {reason_phrase(resp.status)}",
                    f"Content-Type: {resp.content_type}",
                    f"Content-Length: {len(resp.body)}"]
            head += [f"{k}: {v}" for k, v in resp.headers]
            if not keep_alive:
                head.append("Connection: close")
            out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            if req.method != "HEAD":
                out += resp.body
            if self.transport.is_closing():
                return
            self.transport.write(out)
            if not keep_alive:
                self.transport.close()
                return
