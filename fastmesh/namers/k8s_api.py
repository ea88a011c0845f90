"""A small HTTP/1.1 client for the Kubernetes API (plain HTTP, normally ``kubectl proxy``).

Role in the data path: none per request. The ``io.l5d.k8s`` namer and the
``io.l5d.k8s.daemonset`` transformer keep their Endpoints and Services current through it:
one ``GET`` answered by a JSON document, then a streaming watch whose chunked body carries
one JSON document per event (the API server writes each followed by ``\\n`` and flushes it;
a document may still arrive split across chunks, or two may share one).

Built on the running asyncio/uvloop loop with httptools doing the HTTP framing (status
line, headers, chunked decoding). One connection per request: the namer makes few
requests (a list, then long-lived watches), and a fresh connection never inherits a half
read response. Nothing blocks the loop and everything is bounded: connect time, head and
body sizes, the size of one watch document, and the total time of a request or watch.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote, urlencode

import httptools

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_GET_TIMEOUT_S = 30.0
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024  # a GET answer (an Endpoints of thousands of pods fits)
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # one watch event
MAX_ERROR_BODY_BYTES = 1024 * 1024  # the Status body of a non-2xx answer
USER_AGENT = "fastmesh-k8s-namer"

STOP = object()  # returned by a watch event handler to end the watch (e.g. on ERROR)


class ApiError(Exception):
    """The request did not produce an HTTP answer: refused, timed out, cut, malformed."""


@dataclass(frozen=True)
class ApiResponse:
    """A complete (non-streamed) answer."""

    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WatchEnd:
    """How a watch stream ended.

    ``status`` is the HTTP status; for a 2xx the stream ended cleanly (the server's
    ``timeoutSeconds`` elapsed, or it closed) or a handler returned :data:`STOP`
    (``stopped``). For a non-2xx, ``body`` holds the Status document (bounded).
    """

    status: int
    events: int = 0
    stopped: bool = False
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def api_path(path: str, query: dict[str, str] | None = None) -> str:
    """``path?query`` with the query form-encoded (``labelSelector=app%3Dl5d``)."""
    if not query:
        return path
    return f"{path}?{urlencode(query, quote_via=quote, safe='')}"


class JsonDocuments:
    """Splits a watch body into JSON documents, whatever the chunking.

    Documents are newline-separated (the API server's framing; compact JSON never holds a
    raw newline). A line holding several concatenated documents is also read, as a client
    of older servers had to. A partial document waits for the rest; one larger than
    ``max_bytes`` is an error (the stream is abandoned, not buffered without end).
    """

    __slots__ = ("_buf", "_scan_from", "_max", "_on_document", "_decoder", "stopped")

    def __init__(self, on_document: Callable[[Any], Any], max_bytes: int = MAX_DOCUMENT_BYTES):
        self._buf = bytearray()
        self._scan_from = 0
        self._max = max_bytes
        self._on_document = on_document
        self._decoder = json.JSONDecoder()
        self.stopped = False

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return
        self._buf += data
        while not self.stopped:
            newline = self._buf.find(b"\n", self._scan_from)
            if newline < 0:
                self._scan_from = len(self._buf)
                break
            line = bytes(self._buf[:newline])
            del self._buf[: newline + 1]
            self._scan_from = 0
            self._line(line)
        if len(self._buf) > self._max:
            raise ApiError(f"watch document larger than {self._max} bytes")

    def finish(self) -> None:
        """The stream ended: a last document without its newline still counts."""
        if self._buf.strip() and not self.stopped:
            rest, self._buf = bytes(self._buf), bytearray()
            self._line(rest)

    def _line(self, line: bytes) -> None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(f"watch document is not UTF-8: {exc}") from None
        index, end = 0, len(text)
        while index < end and not self.stopped:
            while index < end and text[index] in " \t\r":
                index += 1
            if index >= end:
                break
            try:
                doc, index = self._decoder.raw_decode(text, index)
            except ValueError as exc:
                raise ApiError(f"malformed watch document: {exc}") from None
            if self._on_document(doc) is STOP:
                self.stopped = True


class _ExchangeProtocol(asyncio.Protocol):
    """One request, one response, read with httptools; the body goes to ``sink``."""

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop, max_body: int):
        self.request = request
        self.loop = loop
        self.max_body = max_body
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body = bytearray()
        self.sink: Callable[[bytes], None] | None = None  # set for streamed 2xx bodies
        self.headers_done: asyncio.Future = loop.create_future()
        self.done: asyncio.Future = loop.create_future()

    # -- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ApiError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            # A callback's own error (a size limit, a bad watch document) arrives wrapped.
            cause = exc.__context__
            self._fail(cause if isinstance(cause, ApiError)
                       else ApiError(f"malformed HTTP response: {cause or exc}"))

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self._fail(ApiError("connection closed before the response ended"
                                + (f": {exc}" if exc else "")))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ApiError(f"response head larger than {MAX_HEAD_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.headers_done.done():
            self.headers_done.set_result(self.status)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None and 200 <= self.status < 300:
            sink(body)
            return
        limit = self.max_body if 200 <= self.status < 300 else MAX_ERROR_BODY_BYTES
        if len(self._body) + len(body) > limit:
            raise ApiError(f"response body larger than {limit} bytes")
        self._body += body

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()

    # -- helpers
    def _fail(self, exc: Exception) -> None:
        for fut in (self.headers_done, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a failure nobody awaits is not "never retrieved"
        if self.transport is not None:
            self.transport.close()

    def body(self) -> bytes:
        return bytes(self._body)


class K8sApiClient:
    """Plain-HTTP client for one API server (``host:port``)."""

    def __init__(self, host: str = "localhost", port: int = 8001, *,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 get_timeout_s: float = DEFAULT_GET_TIMEOUT_S):
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.get_timeout_s = get_timeout_s
        host_header = f"[{host}]" if ":" in host else host
        self._host_header = f"{host_header}:{port}"

    @property
    def authority(self) -> str:
        return self._host_header

    def _request(self, target: str) -> bytes:
        return (f"GET {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                f"Accept: application/json\r\nUser-Agent: {USER_AGENT}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")

    async def _connect(self, target: str, max_body: int) -> _ExchangeProtocol:
        loop = asyncio.get_running_loop()
        proto = _ExchangeProtocol(self._request(target), loop, max_body)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: proto, self.host, self.port),
                                   self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(f"connect to {self._host_header} timed out after "
                           f"{self.connect_timeout_s:g}s") from None
        except OSError as exc:
            raise ApiError(f"cannot connect to {self._host_header}: "
                           f"{exc.strerror or exc}") from None
        return proto

    async def get(self, path: str, query: dict[str, str] | None = None) -> ApiResponse:
        """One GET, read whole (bounded in size and in ``get_timeout_s``)."""
        target = api_path(path, query)
        proto = await self._connect(target, MAX_BODY_BYTES)
        try:
            await asyncio.wait_for(asyncio.shield(proto.done), self.get_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(f"GET {target} timed out after {self.get_timeout_s:g}s") from None
        finally:
            if proto.transport is not None:
                proto.transport.close()
        return ApiResponse(proto.status, proto.headers, proto.body())

    async def watch(self, path: str, query: dict[str, str] | None,
                    on_event: Callable[[dict], Any], *, timeout_s: float) -> WatchEnd:
        """Stream a watch; ``on_event(doc)`` runs for every JSON document, in order.

        Returns when the stream ends, when a handler returns :data:`STOP`, or after
        ``timeout_s`` (the caller asks the server for a shorter ``timeoutSeconds``, so this
        only fires on a stalled connection). Raises :class:`ApiError` when there was no
        proper answer or the stream broke mid-document.
        """
        target = api_path(path, query)
        proto = await self._connect(target, MAX_ERROR_BODY_BYTES)
        end = WatchEnd(status=0)

        def on_document(doc: Any) -> Any:
            if not isinstance(doc, dict):
                raise ApiError(f"watch event is not an object: {str(doc)[:80]}")
            end.events += 1
            return on_event(doc)

        documents = JsonDocuments(on_document)

        def sink(data: bytes) -> None:
            documents.feed(data)
            if documents.stopped and not proto.done.done():
                proto.done.set_result(None)
                if proto.transport is not None:
                    proto.transport.close()

        proto.sink = sink
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            try:
                await asyncio.wait_for(asyncio.shield(proto.done), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                if not proto.headers_done.done():
                    raise ApiError(f"watch {target}: no answer within {timeout_s:g}s") from None
                # A stalled stream: end it like a clean end; the caller re-watches.
            end.status = proto.status
            end.headers = proto.headers
            if 200 <= proto.status < 300:
                if not documents.stopped and proto.done.done():
                    documents.finish()
                end.stopped = documents.stopped
            else:
                end.body = proto.body()
        finally:
            if proto.transport is not None:
                proto.transport.close()
        return end
