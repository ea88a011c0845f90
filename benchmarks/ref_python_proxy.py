"""The plain-Python reference proxy: the "same features" baseline the Cython path must beat.

This is style-anchors §5 variant (b), kept as a real program: uvloop + ``asyncio.Protocol``
+ httptools on both legs, written the way a careful Python programmer would, with the
per-request features fastmesh has on its hot path:

* HTTP/1.1 keep-alive on both legs; pipelined requests are queued and answered in order;
* a LIFO pool of idle upstream connections per destination (the most recently used
  connection is the warmest: its TLS session and TCP window are live);
* hop-by-hop headers removed (RFC 7230 §6.1 list plus every header named in Connection),
  chunked bodies re-framed, ``l5d-dst-service`` / ``l5d-dst-client`` added;
* naming by Host: ``/svc/<host>`` looked up in a static route table (one dict lookup,
  like fastmesh's route-cache hit after the first request);
* TLS on either leg through uvloop's TLS transport (server: cert + key; client: a trusted
  CA and a verified name, TLS 1.3 only);
* flow control coupling the legs: ``pause_writing`` on one side pauses reading on the
  other, with flags so the calls are idempotent.

It runs as node A (outgoing, TLS client) or node B (incoming, TLS server) of the benchmark
topology. Errors become linkerd-style responses (502 + ``l5d-err``), a malformed request
gets 400 and the connection closes. It is a benchmark baseline, not a product: no admin,
no metrics, no dtabs.

Usage (A then B)::

    python -m benchmarks.ref_python_proxy --listen 10.77.1.1:4140 \\
        --route world=10.77.2.1:4141 --upstream-tls-ca ca.pem --upstream-tls-name linkerd
    python -m benchmarks.ref_python_proxy --listen 10.77.2.1:4141 \\
        --tls-cert certificate.pem --tls-key key.pk8 --route world=10.77.2.10:8080
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import ssl
import sys
from dataclasses import dataclass

import httptools
import uvloop

# RFC 7230 §6.1 / RFC 2616 §13.5.1 hop-by-hop headers; Transfer-Encoding is re-added
# by us when the body is chunked (we re-frame, we never pass chunk framing through).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Headers we set ourselves: an incoming value is replaced, never forwarded.
OWN_HEADERS = frozenset({b"l5d-dst-service", b"l5d-dst-client"})
DROP_FROM_REQUEST = HOP_BY_HOP | OWN_HEADERS
MAX_PIPELINE = 16  # queued requests per client before we stop reading from it
MAX_IDLE_PER_DEST = 1024  # idle upstream connections kept per destination
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Route:
    """Where a name goes: the concrete address plus the two l5d header values."""

    host: str
    port: int
    dst_service: bytes  # e.g. b"/svc/world"
    dst_client: bytes  # e.g. b"/$/inet/10.77.2.1/4141"


def _error_response(status: int, reason: str, err: str, close: bool) -> bytes:
    body = f"{err}\n".encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"l5d-err: {err}\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Exchange:
    """One request/response pair on a client connection."""

    __slots__ = (
        "head",
        "route",
        "method_head",
        "req_chunked",
        "req_done",
        "pending",
        "keep_alive",
        "http11",
        "upstream",
        "resp_started",
    )

    def __init__(self) -> None:
        self.head = b""
        self.route: Route | None = None
        self.method_head = False
        self.req_chunked = False
        self.req_done = False
        self.pending: list[bytes] = []  # body bytes (framed) received before an upstream
        self.keep_alive = True
        self.http11 = True
        self.upstream: UpstreamConn | None = None
        self.resp_started = False


class Pool:
    """Idle upstream connections per destination, handed out last-in first-out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None, tls_name: str | None):
        self.loop = loop
        self.tls = tls
        self.tls_name = tls_name
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = collections.defaultdict(list)

    def acquire(self, key: tuple[str, int]) -> "UpstreamConn | None":
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.alive:
                conn.in_pool = False
                return conn
        return None

    def release(self, conn: "UpstreamConn") -> None:
        idle = self.idle[conn.key]
        if not conn.alive or len(idle) >= MAX_IDLE_PER_DEST:
            conn.close()
            return
        conn.in_pool = True
        idle.append(conn)

    def discard(self, conn: "UpstreamConn") -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def connect(self, key: tuple[str, int]) -> "UpstreamConn":
        extra = {"ssl": self.tls, "server_hostname": self.tls_name} if self.tls else {}
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(lambda: UpstreamConn(self, key), key[0], key[1], **extra),
            CONNECT_TIMEOUT,
        )
        return conn


class UpstreamConn(asyncio.Protocol):
    """A connection to the next hop; parses responses and streams them to the client."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = False
        self.in_pool = False
        self.client: ClientConn | None = None
        self.exchange: Exchange | None = None
        self.reusable = True
        self.reset_parser = False
        self.paused_client = False  # we paused the client's reading (our writes backed up)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.resp_chunked = False  # re-frame the response body as chunks to the client
        self.resp_close = False  # body delimited by close: close the client afterwards

    # -- transport events --
    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        self.alive = True

    def connection_lost(self, exc):  # type: ignore[override]
        self.alive = False
        if self.in_pool:
            self.pool.discard(self)
            return
        client, ex = self.client, self.exchange
        self.client = self.exchange = None
        if client is not None and ex is not None:
            if self.resp_close and ex.resp_started:
                client.response_done(ex, upstream_reusable=False, end=b"0\r\n\r\n" if self.resp_chunked else b"")
            else:
                client.upstream_failed(ex, "upstream closed the connection")

    def data_received(self, data):  # type: ignore[override]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            client, ex = self.client, self.exchange
            self.close()
            if client is not None and ex is not None:
                client.upstream_failed(ex, f"bad response from upstream: {exc}")
            return
        if self.reset_parser:
            self.reset_parser = False
            self.parser = httptools.HttpResponseParser(self)

    def pause_writing(self):  # type: ignore[override]
        if self.client is not None and not self.paused_client:
            self.paused_client = True
            self.client.set_reading(upstream_full=True)

    def resume_writing(self):  # type: ignore[override]
        if self.paused_client:
            self.paused_client = False
            if self.client is not None:
                self.client.set_reading(upstream_full=False)

    # -- request side --
    def start(self, client: "ClientConn", ex: Exchange) -> None:
        self.client = client
        self.exchange = ex
        ex.upstream = self
        self.reusable = True
        if client.write_paused:
            # The client cannot take more: do not read a response we could not pass on.
            client.paused_upstream = True
            self.transport.pause_reading()
        if ex.pending:
            self.transport.writelines([ex.head, *ex.pending])
            ex.pending.clear()
        else:
            self.transport.write(ex.head)

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks (response) --
    def on_message_begin(self) -> None:
        self.headers = []
        self.reason = b""

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex, client = self.exchange, self.client
        if ex is None or client is None:
            self.reusable = False  # a response nobody asked for: drop this connection
            return
        status = self.parser.get_status_code()
        drop = HOP_BY_HOP
        has_length = chunked = False
        upstream_close = False
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"connection":
                tokens = {tok.strip() for tok in value.lower().split(b",")}
                drop = drop | tokens  # a new set: the module constant stays untouched
                upstream_close = upstream_close or b"close" in tokens
            elif lname == b"content-length":
                has_length = True
            elif lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        no_body = ex.method_head or status < 200 or status in (204, 304)
        self.resp_chunked = self.resp_close = False
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, self.reason)]
        for name, value in self.headers:
            if name.lower() not in drop:
                parts.append(b"%b: %b\r\n" % (name, value))
        if not no_body and (chunked or not has_length):
            if not chunked:
                self.resp_close = True  # body ends when the upstream closes
            if ex.http11:
                parts.append(b"Transfer-Encoding: chunked\r\n")
                self.resp_chunked = True
            else:
                ex.keep_alive = False  # an HTTP/1.0 client learns the end by our close
        if upstream_close or not self.parser.should_keep_alive():
            self.reusable = False
        if status >= 200:
            if not ex.keep_alive:
                parts.append(b"Connection: close\r\n")
            elif not ex.http11:
                parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        ex.resp_started = True
        client.transport.write(b"".join(parts))
        if ex.method_head and status >= 200:
            # llhttp does not know the request was HEAD and would wait for a body.
            self.reset_parser = True
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.client is not None:
            self.client.transport.write(_chunk(body) if self.resp_chunked else body)

    def on_message_complete(self) -> None:
        if self.exchange is None:
            return
        if self.parser.get_status_code() < 200:
            return  # 1xx: the final response follows on the same exchange
        if not self.reset_parser:
            self._finish()

    def _finish(self) -> None:
        client, ex = self.client, self.exchange
        self.client = self.exchange = None
        if self.paused_client:
            self.paused_client = False
            client.set_reading(upstream_full=False)
        # Reuse only when the request went out whole and the upstream keeps the conn.
        reusable = self.reusable and self.alive and ex.req_done and not self.resp_close
        client.response_done(ex, reusable, b"0\r\n\r\n" if self.resp_chunked else b"")
        if reusable:
            self.pool.release(self)
        else:
            self.close()


class ClientConn(asyncio.Protocol):
    """A downstream (client) connection: parses requests, routes, relays responses."""

    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[Exchange] = collections.deque()
        self.parsing: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.closing = False
        self.reading = True
        self.pipeline_full = False  # too many queued requests: stop reading more
        self.upstream_full = False  # the upstream's write buffer is full: stop reading
        self.write_paused = False  # our transport's write buffer is above its high water
        self.paused_upstream = False  # we paused the active upstream's reading

    # -- transport events --
    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc):  # type: ignore[override]
        self.closing = True
        for ex in self.queue:
            up = ex.upstream
            if up is not None:
                up.client = up.exchange = None
                up.close()  # a half-relayed response: this upstream cannot be reused
        self.queue.clear()

    def data_received(self, data):  # type: ignore[override]
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_client(501, "Not Implemented", "upgrade/CONNECT not supported")
        except httptools.HttpParserError as exc:
            self._fail_client(400, "Bad Request", f"malformed request: {exc}")

    def pause_writing(self):  # type: ignore[override]
        self.write_paused = True
        up = self.queue[0].upstream if self.queue else None
        if up is not None and up.transport is not None and not self.paused_upstream:
            self.paused_upstream = True
            up.transport.pause_reading()

    def resume_writing(self):  # type: ignore[override]
        self.write_paused = False
        if self.paused_upstream:
            self.paused_upstream = False
            up = self.queue[0].upstream if self.queue else None
            if up is not None and up.transport is not None:
                up.transport.resume_reading()

    def set_reading(self, *, pipeline_full: bool | None = None, upstream_full: bool | None = None) -> None:
        """Read from the client only while neither reason to stop holds (idempotent)."""
        if pipeline_full is not None:
            self.pipeline_full = pipeline_full
        if upstream_full is not None:
            self.upstream_full = upstream_full
        want = not (self.pipeline_full or self.upstream_full)
        if want != self.reading and not self.closing:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _fail_client(self, status: int, reason: str, err: str) -> None:
        self.closing = True
        if not (self.queue and self.queue[0].resp_started):
            self.transport.write(_error_response(status, reason, err, close=True))
        self.transport.close()

    # -- httptools callbacks (request) --
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.parsing = Exchange()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.parsing
        parser = self.parser
        method = parser.get_method()
        ex.method_head = method == b"HEAD"
        ex.keep_alive = parser.should_keep_alive()
        ex.http11 = parser.get_http_version() == "1.1"
        drop = DROP_FROM_REQUEST
        host = b""
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"host":
                host = value
            elif lname == b"connection":
                drop = drop | {tok.strip() for tok in value.lower().split(b",")}
            elif lname == b"transfer-encoding":
                ex.req_chunked = b"chunked" in value.lower()
        route = self.proxy.route_for(host)
        if route is None:
            ex.route = None
            ex.head = b""
        else:
            ex.route = route
            parts = [b"%b %b HTTP/1.1\r\n" % (method, self.url)]
            for name, value in self.headers:
                if name.lower() not in drop:
                    parts.append(b"%b: %b\r\n" % (name, value))
            parts.append(b"l5d-dst-service: %b\r\nl5d-dst-client: %b\r\n" % (route.dst_service, route.dst_client))
            if ex.req_chunked:
                parts.append(b"Transfer-Encoding: chunked\r\n")
            parts.append(b"\r\n")
            ex.head = b"".join(parts)
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._dispatch(ex)
        elif len(self.queue) >= MAX_PIPELINE:
            self.set_reading(pipeline_full=True)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        data = _chunk(body) if ex.req_chunked else body
        if ex.upstream is not None:
            ex.upstream.transport.write(data)
        elif ex.route is not None:
            ex.pending.append(data)

    def on_message_complete(self) -> None:
        ex = self.parsing
        ex.req_done = True
        if ex.req_chunked:
            if ex.upstream is not None:
                ex.upstream.transport.write(b"0\r\n\r\n")
            else:
                ex.pending.append(b"0\r\n\r\n")
        if ex.route is None and self.queue and self.queue[0] is ex:
            self._no_route(ex)

    # -- dispatch --
    def _dispatch(self, ex: Exchange) -> None:
        if ex.route is None:
            if ex.req_done:
                self._no_route(ex)
            return  # answered once the request body has been read
        key = (ex.route.host, ex.route.port)
        conn = self.proxy.pool.acquire(key)
        if conn is not None:
            conn.start(self, ex)
        else:
            self.proxy.loop.create_task(self._connect_then_start(ex, key))

    async def _connect_then_start(self, ex: Exchange, key: tuple[str, int]) -> None:
        try:
            conn = await self.proxy.pool.connect(key)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.upstream_failed(ex, f"connect to {key[0]}:{key[1]} failed: {exc!r}")
            return
        if self.closing or not self.queue or self.queue[0] is not ex:
            self.proxy.pool.release(conn)
            return
        conn.start(self, ex)

    def _no_route(self, ex: Exchange) -> None:
        ex.resp_started = True
        self.transport.write(_error_response(502, "Bad Gateway", "no route for this Host", close=not ex.keep_alive))
        self.response_done(ex, False, b"")

    def upstream_failed(self, ex: Exchange, err: str) -> None:
        if self.closing:
            return
        if ex.resp_started or not ex.req_done:
            # Mid-response (or mid-request) there is no way to signal the error in-band.
            self.closing = True
            self.transport.close()
            return
        ex.resp_started = True
        self.transport.write(_error_response(502, "Bad Gateway", err, close=not ex.keep_alive))
        self.response_done(ex, False, b"")

    def response_done(self, ex: Exchange, upstream_reusable: bool, end: bytes) -> None:
        if end:
            self.transport.write(end)
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        up, ex.upstream = ex.upstream, None
        if self.paused_upstream:
            # Never hand a connection back to the pool with its reading paused.
            self.paused_upstream = False
            if up is not None and up.transport is not None:
                up.transport.resume_reading()
        if not ex.keep_alive or not ex.req_done:
            self.closing = True
            self.transport.close()
            return
        if self.pipeline_full and len(self.queue) < MAX_PIPELINE:
            self.set_reading(pipeline_full=False)
        if self.queue:
            self._dispatch(self.queue[0])


class Proxy:
    """Routes by Host through a static table; owns the upstream pool."""

    def __init__(self, loop, routes: dict[bytes, Route], default: Route | None, pool: Pool) -> None:
        self.loop = loop
        self.routes = routes
        self.default = default
        self.pool = pool

    def route_for(self, host: bytes) -> Route | None:
        route = self.routes.get(host)
        if route is None:
            # Cache the normalised form, so the next request with this Host is one lookup.
            name = host.split(b":", 1)[0].lower()
            route = self.routes.get(name, self.default)
            if route is not None and len(self.routes) < 10_000:
                self.routes[host] = route
        return route


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def _make_route(name: str, hostport: str) -> Route:
    host, port = _parse_hostport(hostport)
    return Route(host, port, f"/svc/{name}".encode(), f"/$/inet/{host}/{port}".encode())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ref_python_proxy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, type=_parse_hostport, help="HOST:PORT to serve on")
    ap.add_argument("--route", action="append", default=[], metavar="NAME=HOST:PORT", help="Host NAME goes to HOST:PORT")
    ap.add_argument("--default-upstream", metavar="HOST:PORT", help="where unknown Hosts go (default: 502)")
    ap.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="... and this private key (PEM, PKCS#8)")
    ap.add_argument("--upstream-tls-ca", help="connect upstream over TLS, trusting this CA (PEM)")
    ap.add_argument("--upstream-tls-name", default="linkerd", help="name the upstream certificate must carry")
    ap.add_argument("--max-seconds", type=float, default=4 * 3600, help="exit after this long (a bound)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    routes: dict[bytes, Route] = {}
    for spec in args.route:
        name, _, hostport = spec.partition("=")
        routes[name.lower().encode()] = _make_route(name.lower(), hostport)
    default = _make_route("default", args.default_upstream) if args.default_upstream else None
    server_tls = client_tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.minimum_version = ssl.TLSVersion.TLSv1_3
        server_tls.load_cert_chain(args.tls_cert, args.tls_key)
    if args.upstream_tls_ca:
        client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and name
        client_tls.minimum_version = ssl.TLSVersion.TLSv1_3
        client_tls.load_verify_locations(args.upstream_tls_ca)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        pool = Pool(loop, client_tls, args.upstream_tls_name if client_tls else None)
        proxy = Proxy(loop, routes, default, pool)
        server = await loop.create_server(
            lambda: ClientConn(proxy), args.listen[0], args.listen[1], ssl=server_tls, backlog=4096, reuse_address=True
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"ref_python_proxy listening on {args.listen[0]}:{args.listen[1]}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        except asyncio.TimeoutError:
            pass
        server.close()

    uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
