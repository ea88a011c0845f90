# cython: language_level=3
"""The buffer pump: one request at a time from a downstream connection to a pooled
upstream connection and back, over plain or TLS transports alike.

Both legs are BufferedProtocols written as cdef classes, so uvloop reads straight into
our receive buffer (also under TLS, where its SSLProtocol decrypts into it). httptools
(llhttp) tokenizes; its callbacks land on the def methods below, which do the header work
in C (http.pyx) and write the forwarded bytes into per-direction Bufs. Each read ends
with at most one transport.write() per direction, so a small request costs one read and
one write on each leg.

The receive buffer is shared by every connection of the process: uvloop calls
get_buffer() and buffer_updated() back to back for one transport, and httptools copies
what it hands to us before feed_data() returns, so no connection keeps pointers into it.

Flow control couples the legs: the upstream transport's pause_writing() pauses reading
the client, the client transport's pause_writing() pauses reading the upstream, and
routing/connecting pauses reading the client until there is somewhere to put the body.

One exchange = one request; it may take several attempts (a requeue after a stale pooled
connection or a refused connect, a retry after a retryable failure, spec §9.3). Counting
is exactly once per scope: the server and service scopes per request (`_request_end`),
the client scope per attempt (`_attempt_end`).
"""

import functools
import ssl as _ssl

from httptools import HttpRequestParser, HttpResponseParser
from httptools.parser.errors import HttpParserError, HttpParserUpgrade, HttpParserCallbackError

from cpython.bytes cimport PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t

from fastmesh._core.http cimport Buf, RequestHead, ResponseHead, TraceCtx, decode_trace, write_trace
from fastmesh._core.pool cimport Endpoint, Client, Route, RetryBudget, fast_random, method_bit
from fastmesh._core.stats cimport (
    StatBlock, now_us, record_latency, record_status, FASTMESH_STATS,
    ST_REQUESTS, ST_SUCCESS, ST_FAILURES, ST_PENDING, ST_CONNECTIONS, ST_CONNECTS,
    ST_CONNECT_FAILURES, ST_CLOSES, ST_RECV_BYTES, ST_SENT_BYTES, ST_POOL_HITS,
    ST_POOL_MISSES, ST_TLS_HANDSHAKES, ST_TLS_FAILURES, ST_REQUEUES, ST_ERRORS,
    ST_RETRIES, ST_BUDGET_EXHAUSTED, ST_TIMEOUTS)


cdef enum:
    RECV_BUFFER_SIZE = 262144
    DIRECT_WRITE_MIN = 16384     # body pieces at least this big are written, not copied
    MAX_ATTEMPTS = 3             # connection attempts per request (requeues, spec §9.3)


cdef bytearray _recv_buffer = bytearray(RECV_BUFFER_SIZE)
cdef object _recv_view = memoryview(_recv_buffer)

cdef bytes _VIA_11 = b"1.1 linkerd"
cdef bytes _VIA_10 = b"1.0 linkerd"
cdef bytes _HEX = b"0123456789abcdef"


cdef class ServerCore:

    def __init__(self, router, dict routes, StatBlock stats, loop):
        self.router = router
        self.routes = routes
        self.stats = stats
        self.loop = loop
        self.clear_context = False
        self.max_call_depth = 1000
        self.max_header_bytes = 8 * 1024
        self.max_target_bytes = 4 * 1024
        self.key_kind = K_HOST
        self.key_header_name = None
        self.key_path_segments = 1
        self.key_uri_in_dst = False
        self.key_list = None
        self.conns = set()
        self.access_log = None
        self.max_concurrent = 0
        self.active = 0
        self.timestamp_header = None
        self.tcp_keepalive = False
        self.tls = False

    def __call__(self):
        # uvloop's protocol factory: one ServerConn per accepted connection.
        return ServerConn(self)


cdef inline void _count(StatBlock blk, int slot, int64_t v) noexcept:
    if FASTMESH_STATS and blk is not None:
        blk.p[slot] += v


cdef inline void _count_done(StatBlock blk, int status, int64_t us) noexcept:
    # One finished request (or attempt) in one scope: pending, success/failure (5xx or
    # no response at all fails — the default response classifier of spec §9.4), status
    # class and code, latency.
    if not FASTMESH_STATS or blk is None:
        return
    blk.p[ST_PENDING] -= 1
    blk.p[ST_FAILURES if (status >= 500 or status < 100) else ST_SUCCESS] += 1
    record_status(blk.p, status)
    record_latency(blk.p, us)


cdef class ServerConn:

    def __init__(self, ServerCore core):
        self.core = core
        self.req = RequestHead()
        self.req.clear_context = core.clear_context
        self.req.key_header_name = core.key_header_name
        self.cur = None
        self.spare = self.req
        self.queued = None
        self.up_out = Buf(512)
        self.out = Buf(512)
        self.state = S_IDLE

    # ---- transport callbacks ------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self._write = transport.write
        self.parser = HttpRequestParser(self)
        self._feed = self.parser.feed_data
        self.core.conns.add(self)
        _count(self.core.stats, ST_CONNECTIONS, 1)
        _count(self.core.stats, ST_CONNECTS, 1)
        if self.core.tls:
            # uvloop calls connection_made only after the TLS handshake succeeded
            _count(self.core.stats, ST_TLS_HANDSHAKES, 1)
        if self.core.tcp_keepalive:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                import socket as _socket
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self.core.conns.discard(self)
        _count(self.core.stats, ST_CONNECTIONS, -1)
        _count(self.core.stats, ST_CLOSES, 1)
        if self.state != S_IDLE and self.state != S_CLOSING:
            # The client went away mid-exchange: the upstream side cannot be reused.
            self._drop_attempt()
            self._attempt_end(0)
            self._request_end(0)
        self.state = S_IDLE
        # break the parser <-> protocol reference cycle
        self.parser = None
        self._feed = None
        self._write = None

    def get_buffer(self, Py_ssize_t sizehint):
        return _recv_view

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef object view
        if self.closed or self.state == S_CLOSING:
            return
        _count(self.core.stats, ST_RECV_BYTES, nbytes)
        if self.in_msg and self.head_bytes >= 0:
            self.head_bytes += nbytes
        view = _recv_view[:nbytes]
        try:
            self._feed(view)
        except HttpParserUpgrade as up:
            # The Upgrade header was dropped as hop-by-hop (linkerd 1 does not tunnel), so
            # the request was proxied as a plain one; parse what followed it normally.
            off = up.args[0]
            if off < nbytes:
                try:
                    self._feed(view[off:])
                except HttpParserError as exc:
                    self._bad_request(exc)
        except HttpParserCallbackError as exc:
            # A bug of ours surfaced inside a callback: answer, log, close.
            self.core.loop.call_exception_handler({
                "message": "fastmesh: error while handling a request",
                "exception": exc.__context__ or exc, "protocol": self})
            if not self.resp_head_sent:
                self._respond_error(self.core.router.internal_error_response(exc), True, 500)
            else:
                self._abort()
            return
        except HttpParserError as exc:
            self._bad_request(exc)
            return
        if self.in_msg and self.head_bytes > self.core.max_header_bytes \
                + self.core.max_target_bytes + 65536:
            # A head far beyond the limits (one endless header line): stop reading it.
            if self.state == S_IDLE:
                self._open_request()
            self._respond_error(self.core.router.bad_request_response(
                self, 431, "request headers too large"), True, 431)
            return
        self._flush_up()
        self._flush_out()

    def eof_received(self):
        # The client closed its side: like linkerd (netty has no half-close) and nginx
        # (proxy_ignore_client_abort off), give up the exchange — returning False closes
        # the transport, and connection_lost drops the upstream attempt.
        return False

    def pause_writing(self):
        # The client reads slower than the upstream answers: stop reading upstream.
        self.write_paused = True
        if self.up is not None:
            self.up._set_reading(False)

    def resume_writing(self):
        self.write_paused = False
        if self.up is not None:
            self.up._set_reading(True)

    # ---- httptools callbacks (request) ----------------------------------------------

    def on_url(self, bytes url):
        if not self.in_msg:
            self._begin_msg()
        if self.req.target.len + PyBytes_GET_SIZE(url) > self.core.max_target_bytes:
            self.req.error_status = 414
            return
        self.req.target.add_bytes(url)

    def on_header(self, bytes name, bytes value):
        cdef RequestHead req = self.req
        if req.header_bytes > self.core.max_header_bytes:
            req.error_status = 431
            return
        req.add_header(name, value)
        if req.header_bytes > self.core.max_header_bytes and req.error_status == 0:
            req.error_status = 431

    def on_headers_complete(self):
        cdef RequestHead req = self.req
        cdef object parser = self.parser
        cdef str version = parser.get_http_version()
        req.method = parser.get_method()
        req.http_major = 1
        req.http_minor = 0 if version == "1.0" else 1
        if version != "1.0" and version != "1.1":
            req.http_major = int(version[0])
            req.http_minor = int(version[2])
        req.keep_alive = parser.should_keep_alive()
        req.finish()
        self.head_bytes = -1
        if not self.parsing_queued:
            self._start_exchange()

    def on_body(self, bytes body):
        if self.parsing_queued:
            if self.req.body is None:
                self.req.body = [body]
            else:
                self.req.body.append(body)
            return
        self._req_body(body)

    def on_message_complete(self):
        self.in_msg = False
        self.req.complete = True
        if self.parsing_queued:
            self.parsing_queued = False
            return
        self._req_complete()

    # ---- exchange -------------------------------------------------------------------

    cdef _begin_msg(self):
        cdef RequestHead r
        self.in_msg = True
        self.head_bytes = 0
        if self.state == S_IDLE and not self.queued:
            r = self.spare
            r.reset()
            self.req = r
            self.parsing_queued = False
        else:
            # Pipelined: parse ahead into a new head and stop reading until it is served.
            r = RequestHead()
            r.clear_context = self.core.clear_context
            r.key_header_name = self.core.key_header_name
            if self.queued is None:
                self.queued = []
            self.queued.append(r)
            self.req = r
            self.parsing_queued = True
            self._pause(PAUSE_PIPELINE)

    cdef _open_request(self):
        # Start accounting for a request (also one that is refused before routing).
        self.cur = self.req
        self.t0 = now_us()
        self.req_done = False
        self.resp_done = False
        self.resp_head_sent = False
        self.resp_chunked_out = False
        self.resp_no_body = False
        self.resp_status = 0
        self.route = None
        self.client = None
        self.endpoint = None
        self.up = None
        self.replay = None
        self.replay_head_len = 0
        self.first_flush = True
        self.replaying = False
        self.attempts = 0
        self.retries = 0
        self.retrying = False
        self.backoff_prev_ms = 0.0
        self.svc_open = False
        self.cli_open = False
        self.srv_open = True
        self.state = S_WAIT_ROUTE
        self.core.active += 1
        _count(self.core.stats, ST_REQUESTS, 1)
        _count(self.core.stats, ST_PENDING, 1)

    cdef _start_exchange(self):
        cdef RequestHead req = self.req
        cdef ServerCore core = self.core
        cdef object route
        cdef PyObject* hit
        cdef bytes key
        cdef Py_ssize_t hops
        self._open_request()
        if req.error_status != 0:
            self._respond_error(core.router.bad_request_response(
                self, req.error_status, None), True, req.error_status)
            return
        if core.max_concurrent > 0 and core.active > core.max_concurrent:
            self._respond_error(core.router.overloaded_response(self, core.max_concurrent),
                                False, 503)
            return
        if req.via is not None and core.max_call_depth > 0:
            hops = req.via.count(b",") + 1
            if hops > core.max_call_depth:
                self._respond_error(core.router.max_call_depth_response(
                    self, core.max_call_depth), False, 400)
                return
        key = self._route_key(req)
        if req.has_override():
            route = core.router.lookup_override(self, key)
        else:
            hit = PyDict_GetItem(core.routes, key)
            if hit is not NULL:
                route = <object>hit
            else:
                route = core.router.lookup(self, key)
        if route is None:
            # The name is still binding; route_ready() continues. Hold the body back.
            self._pause(PAUSE_WAITING)
            return
        self._on_route(<Route>route)

    cdef bytes _route_key(self, RequestHead req):
        cdef ServerCore core = self.core
        cdef int kind = core.key_kind
        if kind == K_HOST:
            return req.host
        if kind == K_LIST:
            parts = []
            for spec in core.key_list:
                parts.append(self._key_part(req, spec[0], spec[1], spec[2], spec[3]))
            return b"\x00".join(parts)
        return self._key_part(req, kind, core.key_header_name, core.key_path_segments,
                              core.key_uri_in_dst)

    def _key_part(self, RequestHead req, int kind, bytes header, int segments, bint uri):
        cdef Py_ssize_t end
        if kind == K_HOST:
            return req.host
        if kind == K_HEADER:
            if header == b"host":
                return req.host
            return req.key_header if req.key_header is not None else b""
        if kind == K_METHOD_HOST:
            k = b"%d.%d %s %s" % (req.http_major, req.http_minor, req.method, req.host.lower())
            if uri:
                k += b" " + req.target_bytes.partition(b"?")[0]
            return k
        if kind == K_PATH:
            end = req.path_prefix_end(segments)
            if end < 0:
                return b"\x01short"
            return req.target_bytes[:end]
        return b""

    def route_ready(self, Route route):
        """The router finished binding a name that was pending when the request came."""
        if self.closed or self.state != S_WAIT_ROUTE:
            return
        self._on_route(route)
        self._flush_up()
        self._flush_out()

    cdef _on_route(self, Route route):
        cdef Client client
        cdef Endpoint ep
        cdef RequestHead req = self.cur
        self.route = route
        if route.err_status != 0:
            self._respond_error(route.err_response, route.err_close, route.err_status)
            return
        if route.service_stats is not None:
            self.svc_open = True
            _count(route.service_stats, ST_REQUESTS, 1)
            _count(route.service_stats, ST_PENDING, 1)
        if route.budget is not None:
            route.budget.deposit(self.t0)
        if route.total_timeout > 0:
            self.total_timer = self.core.loop.call_later(route.total_timeout, self._on_timeout,
                                                        True)
        client = route.pick()
        self.client = client
        ep = client.pick(0) if client is not None else None
        if ep is None:
            self._respond_error(self.core.router.no_hosts_response(self, route, client),
                                False, 502)
            return
        self._write_request_head(req, route, client)
        self.replay_head_len = self.up_out.len
        if req.body is not None:
            # body pieces that arrived while the name was binding
            pending = req.body
            req.body = None
            self.state = S_WAIT_CONN
            for piece in pending:
                self._req_body(piece)
        if req.complete and not self.req_done:
            self.state = S_WAIT_CONN
            self._req_complete()
        self._use_endpoint(ep)

    cdef _write_request_head(self, RequestHead req, Route route, Client client):
        cdef Buf o = self.up_out
        cdef uint64_t rid
        cdef int i
        cdef TraceCtx trace
        o.add_bytes(req.method)
        o.add(b" ", 1)
        if route.consume_segments > 0:
            o.add_bytes(req.consumed_target(route.consume_segments))
        elif req.target.len:
            o.add(req.target.data, req.target.len)
        else:
            o.add(b"/", 1)
        o.add(b" HTTP/1.1\r\nHost: ", 17)
        o.add_bytes(req.host)
        o.add(b"\r\n", 2)
        o.add(req.headers.data, req.headers.len)
        o.add_bytes(route.dst_service_hdr)
        o.add_bytes(client.dst_client_hdr)
        o.add_bytes(route.dst_residual_hdr)
        if req.has_override():
            o.add_bytes(route.ctx_dtab_hdr)
        o.add(b"Via: ", 5)
        if req.via is not None:
            o.add_bytes(req.via)
            o.add(b", ", 2)
        if req.http_major == 1 and req.http_minor == 0:
            o.add_bytes(_VIA_10)
        else:
            o.add_bytes(_VIA_11)
        o.add(b"\r\n", 2)
        # Trace context (linkerd's default propagator): continue the caller's trace with a
        # new child span, or start one. l5d-reqid is the trace id, constant along a chain,
        # unless the request already carries one. W3C traceparent passes through as is.
        if req.ctx_trace is None or not decode_trace(req.ctx_trace, &trace):
            trace.trace_id = fast_random()
            trace.span_id = trace.trace_id
            trace.flags = 0
            trace.has_high = False
            trace.trace_id_high = 0
        trace.parent_id = trace.span_id
        trace.span_id = fast_random()
        o.add(b"l5d-ctx-trace: ", 15)
        write_trace(o, &trace)
        o.add(b"\r\n", 2)
        o.add(b"l5d-reqid: ", 11)
        if req.reqid is not None:
            o.add_bytes(req.reqid)
        else:
            rid = trace.trace_id
            o.reserve(18)
            for i in range(16):
                o.data[o.len + i] = _HEX[(rid >> (60 - 4 * i)) & 15]
            o.len += 16
        o.add(b"\r\n", 2)
        if self.core.timestamp_header is not None:
            o.add_bytes(self.core.timestamp_header)
            o.add(b": ", 2)
            o.add_int(_epoch_ms())
            o.add(b"\r\n", 2)
        if req.chunked:
            o.add(b"Transfer-Encoding: chunked\r\n", 28)
        elif req.has_length:
            o.add(b"Content-Length: ", 16)
            o.add_int(req.content_length)
            o.add(b"\r\n", 2)
        o.add(b"\r\n", 2)

    cdef _use_endpoint(self, Endpoint ep):
        cdef UpstreamConn up
        self.endpoint = ep
        ep.outstanding += 1
        if self.client.attempt_timeout > 0:
            self.attempt_timer = self.core.loop.call_later(self.client.attempt_timeout,
                                                          self._on_timeout, False)
        while ep.idle:
            up = <UpstreamConn>ep.idle.pop()
            if up.closed:
                continue
            _count(self.client.stats, ST_POOL_HITS, 1)
            self._attach(up, True)
            return
        _count(self.client.stats, ST_POOL_MISSES, 1)
        self._connect(ep)

    cdef _attach(self, UpstreamConn up, bint reused):
        self.up = up
        self.state = S_ACTIVE
        up._prepare(self, self.cur.method == b"HEAD")
        up.reused = reused
        if self.write_paused:
            up._set_reading(False)
        self.cli_open = True
        _count(self.client.stats, ST_REQUESTS, 1)
        _count(self.client.stats, ST_PENDING, 1)
        self._unpause(PAUSE_WAITING)
        self._flush_up()

    cdef _connect(self, Endpoint ep):
        cdef Client client = self.client
        self.state = S_WAIT_CONN
        self.attempts += 1
        self._pause(PAUSE_WAITING)
        tls = client.tls
        loop = self.core.loop
        factory = functools.partial(UpstreamConn, ep)
        if tls is not None:
            coro = loop.create_connection(
                factory, ep.host, ep.port, ssl=tls.context,
                server_hostname=tls.server_hostname,
                ssl_handshake_timeout=client.connect_timeout)
        else:
            coro = loop.create_connection(factory, ep.host, ep.port)
        task = loop.create_task(coro)
        timer = loop.call_later(client.connect_timeout, task.cancel)
        task.add_done_callback(functools.partial(self._connected, ep, client, timer))

    def _connected(self, Endpoint ep, Client client, timer, task):
        cdef UpstreamConn up = None
        timer.cancel()
        exc = None
        if task.cancelled():
            exc = TimeoutError(f"connect timed out after {client.connect_timeout:g} s")
        else:
            exc = task.exception()
        if exc is None:
            transport, up = task.result()
            if client.tls is not None:
                try:
                    client.tls.post_handshake_check(transport.get_extra_info("ssl_object"))
                except Exception as e:
                    exc = e
                    transport.abort()
                    up = None
        waiting = not self.closed and self.state == S_WAIT_CONN and self.endpoint is ep \
            and self.client is client
        if exc is not None:
            _count(client.stats, ST_CONNECT_FAILURES, 1)
            if client.tls is not None and isinstance(exc, (_ssl.SSLError, _ssl.CertificateError)):
                _count(client.stats, ST_TLS_FAILURES, 1)
            ep.consecutive_failures += 1
            # keep p2c away from an endpoint that just refused us, briefly (µs, monotonic)
            ep.down_until = now_us() + <int64_t>(min(5.0, 0.1 * ep.consecutive_failures) * 1e6)
            if not waiting:
                return
            # the attempt failed without a response: the client scope counts a failure
            _count(client.stats, ST_REQUESTS, 1)
            _count(client.stats, ST_PENDING, 1)
            self.cli_open = True
            self._attempt_end(0)
            ep.outstanding -= 1
            self.endpoint = None
            if self.attempts < MAX_ATTEMPTS and len(client.endpoints) > 1:
                nxt = client.pick(0)
                if nxt is not None and nxt is not ep:
                    _count(client.stats, ST_REQUEUES, 1)
                    self._use_endpoint(nxt)
                    return
            self._respond_error(self.core.router.connect_error_response(
                self, self.route, client, ep, exc), False, 502)
            return
        ep.consecutive_failures = 0
        ep.down_until = 0
        _count(client.stats, ST_CONNECTS, 1)
        _count(client.stats, ST_CONNECTIONS, 1)
        if client.tls is not None:
            _count(client.stats, ST_TLS_HANDSHAKES, 1)
        if not waiting:
            # Nobody waits for this connection any more: keep it for the next request.
            up._release()
            return
        self._attach(up, False)

    cdef _req_body(self, bytes body):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
        cdef Buf o = self.up_out
        if self.state == S_WAIT_ROUTE:
            if self.cur.body is None:
                self.cur.body = [body]
            else:
                self.cur.body.append(body)
            return
        if self.state == S_CLOSING or self.state == S_IDLE:
            return  # answered already; the connection closes after the answer
        if n == 0:
            return
        if self.cur.chunked:
            o.add_hex(n)
            o.add(b"\r\n", 2)
        if n >= DIRECT_WRITE_MIN and self.state == S_ACTIVE:
            # Large piece: hand the bytes object itself to the transport, no copy.
            self._flush_up()
            self.replay = None
            _count(self.client.stats, ST_SENT_BYTES, n)
            if not self.up.closed:
                self.up._write(body)
        else:
            o.add_bytes(body)
        if self.cur.chunked:
            o.add(b"\r\n", 2)

    cdef _req_complete(self):
        if self.state == S_WAIT_ROUTE or self.state == S_CLOSING or self.state == S_IDLE:
            # waiting for the route (_on_route replays completion) or already answered
            return
        self.req_done = True
        if self.cur.chunked:
            self.up_out.add(b"0\r\n\r\n", 5)
        if self.resp_done:
            self._finish_exchange()

    cdef bint _should_retry(self, UpstreamConn up, int status, bint timeout):
        # spec §9.3/§9.4: the classifier says retryable, the request can be sent again
        # (whole, not chunked), and the service's budget allows it.
        cdef Route route = self.route
        cdef bint retryable
        if route is None or route.budget is None or self.resp_head_sent:
            return False
        if self.replay is None or not self.req_done or self.cur.chunked:
            return False
        if timeout:
            retryable = (route.retry_methods & method_bit(self.cur.method)) != 0
        else:
            if status < 500 or not route.failure_5xx:
                return False
            retryable = (route.retry_methods & method_bit(self.cur.method)) != 0 or \
                (up is not None and up.resp.l5d_retryable)
        if not retryable:
            return False
        if not route.budget.try_withdraw(now_us()):
            _count(route.service_stats, ST_BUDGET_EXHAUSTED, 1)
            return False
        return True

    cdef _schedule_retry(self):
        cdef Route route = self.route
        cdef double delay_ms = 0.0, hi
        self.state = S_RETRY_WAIT
        if route.backoff_max_ms > 0:
            if route.backoff_min_ms >= route.backoff_max_ms:
                delay_ms = route.backoff_max_ms      # constant backoff
            else:
                # decorrelated jitter: uniform in [min, min(max, 3 * previous)]
                hi = min(route.backoff_max_ms, max(route.backoff_min_ms,
                                                   3.0 * self.backoff_prev_ms))
                delay_ms = route.backoff_min_ms + (fast_random() >> 11) * \
                    (1.0 / 9007199254740992.0) * (hi - route.backoff_min_ms)
            self.backoff_prev_ms = delay_ms
        # Even with no backoff, start the retry from a fresh loop iteration: the failed
        # attempt's connection may still be inside its parser's feed_data().
        if delay_ms > 0:
            self.core.loop.call_later(delay_ms / 1000.0, self._retry)
        else:
            self.core.loop.call_soon(self._retry)

    def _retry(self):
        cdef Client client
        cdef Endpoint ep
        cdef Route route = self.route
        if self.closed or self.state != S_RETRY_WAIT:
            return
        self.retrying = False
        self.retries += 1
        _count(route.service_stats, ST_RETRIES, 1)
        client = route.pick()
        ep = client.pick(0) if client is not None else None
        if ep is None:
            self._respond_error(self.core.router.no_hosts_response(self, route, client),
                                False, 502)
            return
        self.up_out.clear()
        if client is self.client:
            self.up_out.add_bytes(self.replay)
        else:
            # another member of a union: its own l5d-dst-client header, the same body
            self._write_request_head(self.cur, route, client)
            self.up_out.add(<char*>self.replay + self.replay_head_len,
                            PyBytes_GET_SIZE(self.replay) - self.replay_head_len)
        self.client = client
        self.replaying = True
        self.state = S_WAIT_CONN
        self._use_endpoint(ep)
        self._flush_out()

    def _on_timeout(self, bint total):
        """totalTimeoutMs (whole request) or requestAttemptTimeoutMs (one attempt) fired."""
        cdef Route route = self.route
        if total:
            self.total_timer = None
        else:
            self.attempt_timer = None
        if self.closed or self.state == S_IDLE or self.state == S_CLOSING:
            return
        if self.resp_head_sent:
            # Part of the response is out already: the client must see it fail.
            self._drop_attempt()
            self._attempt_end(0)
            self._request_end(0)
            self._abort()
            return
        self._drop_attempt()
        self._attempt_end(0)
        if not total and self.state != S_RETRY_WAIT and self._should_retry(None, 0, True):
            self._schedule_retry()
            return
        _count(self.core.stats, ST_TIMEOUTS, 1)
        self._respond_error(self.core.router.timeout_response(
            self, route, self.client, total), False, 503)

    cdef _drop_attempt(self):
        # Abandon the upstream side of the current attempt (timeout, client gone): the
        # connection is mid-exchange and cannot be reused.
        cdef UpstreamConn up = self.up
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None
        if up is not None:
            up.down = None
            if not up.closed:
                up.transport.abort()
            self.up = None
        if self.endpoint is not None:
            self.endpoint.outstanding -= 1
            self.endpoint = None

    cdef _resp_head(self, UpstreamConn up, int status):
        cdef Buf o = self.out
        cdef ResponseHead resp = up.resp
        cdef RequestHead req = self.cur
        cdef bint failed
        if 100 <= status < 200 and status != 101:
            # interim response (100 Continue): pass it on, the real one follows
            up.interim = True
            o.add(b"HTTP/1.1 ", 9)
            o.add_int(status)
            o.add(b" ", 1)
            o.add_bytes(resp.reason)
            o.add(b"\r\n", 2)
            o.add(resp.headers.data, resp.headers.len)
            o.add(b"\r\n", 2)
            resp.reset()
            return
        if self._should_retry(up, status, False):
            # Drain this response (keeping the connection usable), then retry.
            self.retrying = True
            self.resp_status = status
            if req.method == b"HEAD":
                up.swap_parser = True
                self._resp_complete(up)
            return
        self.resp_status = status
        self.resp_head_sent = True
        failed = status >= 500 and self.route.failure_5xx
        resp.drop_connection_named()
        o.add(b"HTTP/1.1 ", 9)
        o.add_int(status)
        o.add(b" ", 1)
        o.add_bytes(resp.reason)
        o.add(b"\r\n", 2)
        o.add(resp.headers.data, resp.headers.len)
        o.add(b"Via: ", 5)
        if resp.via is not None:
            o.add_bytes(resp.via)
            o.add(b", ", 2)
        o.add_bytes(_VIA_11)
        if failed:
            o.add(b"\r\nl5d-success-class: 0.0\r\n", 26)
        else:
            o.add(b"\r\nl5d-success-class: 1.0\r\n", 26)
        self.resp_no_body = req.method == b"HEAD" or status == 204 or status == 304
        if self.resp_no_body:
            if resp.has_length:
                o.add(b"Content-Length: ", 16)
                o.add_int(resp.content_length)
                o.add(b"\r\n", 2)
        elif resp.has_length:
            o.add(b"Content-Length: ", 16)
            o.add_int(resp.content_length)
            o.add(b"\r\n", 2)
        elif resp.chunked or (req.http_major == 1 and req.http_minor == 1):
            # chunked upstream, or a close-delimited body re-framed for an HTTP/1.1 client
            o.add(b"Transfer-Encoding: chunked\r\n", 28)
            self.resp_chunked_out = True
        else:
            self.close_after = True
        if self.close_after or not req.keep_alive:
            o.add(b"Connection: close\r\n", 19)
            self.close_after = True
        elif req.http_minor == 0:
            o.add(b"Connection: keep-alive\r\n", 24)
        o.add(b"\r\n", 2)
        if req.method == b"HEAD":
            # llhttp cannot be told a HEAD response has no body; end it here and give
            # the connection a fresh parser.
            up.swap_parser = True
            self._resp_complete(up)

    cdef _resp_body(self, bytes body):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
        cdef Buf o = self.out
        if n == 0 or self.resp_no_body or self.retrying:
            return
        if self.resp_chunked_out:
            o.add_hex(n)
            o.add(b"\r\n", 2)
        if n >= DIRECT_WRITE_MIN:
            self._flush_out()
            if not self.closed:
                self._write(body)
                _count(self.core.stats, ST_SENT_BYTES, n)
        else:
            o.add_bytes(body)
        if self.resp_chunked_out:
            o.add(b"\r\n", 2)

    cdef _resp_complete(self, UpstreamConn up):
        cdef int status = self.resp_status
        if up.interim:
            up.interim = False
            return
        if self.retrying:
            # The failed attempt's response is drained: the connection can serve again.
            self._attempt_end(status)
            if self.endpoint is not None:
                self.endpoint.outstanding -= 1
                self.endpoint = None
            self.up = None
            up.down = None
            if up.resp.keep_alive:
                up._release()
            else:
                up.transport.close()
            self._schedule_retry()
            return
        if self.resp_done:
            return
        if self.resp_chunked_out:
            self.out.add(b"0\r\n\r\n", 5)
        self.resp_done = True
        self._attempt_end(status)
        self._request_end(status)
        if not self.req_done:
            # Upstream answered before the whole request body arrived: the client
            # connection cannot be resynchronised, close it after the answer.
            self.close_after = True
        self._finish_exchange()

    cdef _attempt_end(self, int status):
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None
        if self.cli_open:
            self.cli_open = False
            if self.client is not None:
                _count_done(self.client.stats, status, now_us() - self.t0)

    cdef _request_end(self, int status):
        cdef int64_t us
        if self.total_timer is not None:
            self.total_timer.cancel()
            self.total_timer = None
        if not self.srv_open:
            return
        self.srv_open = False
        self.core.active -= 1
        us = now_us() - self.t0
        _count_done(self.core.stats, status, us)
        if self.svc_open:
            self.svc_open = False
            if self.route is not None:
                _count_done(self.route.service_stats, status, us)

    cdef _finish_exchange(self):
        cdef UpstreamConn up = self.up
        cdef Endpoint ep = self.endpoint
        if ep is not None:
            ep.outstanding -= 1
        self.up = None
        self.state = S_IDLE
        if up is not None:
            up.down = None
            if self.req_done and up.resp.keep_alive:
                up._release()
            else:
                up.transport.close()
        if self.core.access_log is not None:
            self.core.router.log_access(self)
        self.endpoint = None
        self.cur = None
        self._unpause(PAUSE_UPSTREAM_FULL | PAUSE_WAITING)
        if self.close_after:
            self._flush_out()
            if not self.closed:
                self.transport.close()
            self.state = S_CLOSING
            return
        if self.queued:
            # Serve the next pipelined request after this read's writes are out.
            self.core.loop.call_soon(self._next_queued)

    def _next_queued(self):
        cdef RequestHead r
        if self.closed or self.state != S_IDLE or not self.queued:
            return
        r = <RequestHead>self.queued.pop(0)
        if not self.queued:
            self.queued = None
        saved = self.req
        saved_parsing = self.parsing_queued
        self.req = r
        self._start_exchange()
        if saved is r:
            # still being parsed: further body goes straight to the exchange
            self.parsing_queued = False
        else:
            self.req = saved
            self.parsing_queued = saved_parsing
        if r.body is not None and self.state != S_WAIT_ROUTE:
            pending = r.body
            r.body = None
            for piece in pending:
                self._req_body(piece)
        if r.complete and self.state != S_WAIT_ROUTE and not self.req_done \
                and self.state != S_IDLE and self.state != S_CLOSING:
            self._req_complete()
        if not self.queued:
            self._unpause(PAUSE_PIPELINE)
        self._flush_up()
        self._flush_out()

    cdef _upstream_lost(self, UpstreamConn up, object exc):
        # The upstream connection closed while serving our exchange.
        if self.resp_done:
            return
        if self.retrying:
            # it closed while we drained a failed attempt: retry anyway
            self.up = None
            self._resp_complete(up)
            return
        if not self.resp_head_sent and not up.resp_started:
            if up.reused and self.replay is not None and self.attempts < MAX_ATTEMPTS:
                # A pooled connection the server had closed: the request never reached
                # it, so send the same bytes on a fresh connection. Not an attempt of its
                # own in the client scope (nothing was answered).
                _count(self.client.stats, ST_REQUEUES, 1)
                if self.cli_open:
                    self.cli_open = False
                    _count(self.client.stats, ST_REQUESTS, -1)
                    _count(self.client.stats, ST_PENDING, -1)
                self.up = None
                self.up_out.clear()
                self.up_out.add_bytes(self.replay)
                self.replaying = True
                ep = self.endpoint
                ep.outstanding -= 1
                if self.attempt_timer is not None:
                    self.attempt_timer.cancel()
                    self.attempt_timer = None
                self._use_endpoint(ep)
                return
            self.up = None
            self._attempt_end(0)
            if self.endpoint is not None:
                self.endpoint.outstanding -= 1
                self.endpoint = None
            self._respond_error(self.core.router.upstream_closed_response(
                self, self.route, self.client, up.endpoint, exc), False, 502)
            return
        if up.resp_started and not self.resp_no_body and up.resp.has_length is False \
                and up.resp.chunked is False and self.resp_head_sent:
            # close-delimited body: end of stream is end of message (llhttp needs EOF
            # for this, which httptools does not expose)
            self._resp_complete(up)
            self._flush_out()
            return
        # Response cut off mid-body: the client must see a broken response, not a
        # silently truncated one.
        self.up = None
        self._attempt_end(0)
        self._request_end(0)
        if self.endpoint is not None:
            self.endpoint.outstanding -= 1
            self.endpoint = None
        self._abort()

    cdef _respond_error(self, bytes response, bint close, int status):
        # Answer the current request with fastmesh's own response (spec §7), e.g. 502
        # with l5d-err, and end the exchange.
        cdef Py_ssize_t eol
        if self.closed:
            return
        if close or self.cur is None or not self.cur.keep_alive or (
                not self.cur.complete and (self.cur.chunked or self.cur.content_length > 0)):
            # A request body still on its way cannot be skipped reliably: close after the
            # answer. A request without a body keeps its connection (linkerd does too).
            self.close_after = True
        if self.close_after and b"\r\nConnection: close\r\n" not in response:
            # say so, so the client does not reuse a connection we are about to close
            eol = response.find(b"\r\n") + 2
            self.out.add_bytes(response[:eol])
            self.out.add(b"Connection: close\r\n", 19)
            self.out.add_bytes(response[eol:])
        else:
            self.out.add_bytes(response)
        self.resp_done = True
        self.resp_status = status
        _count(self.core.stats, ST_ERRORS, 1)
        self._attempt_end(0)
        self._request_end(status)
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None
        self.endpoint = None
        self.up = None
        self.up_out.clear()
        self.state = S_IDLE
        if self.core.access_log is not None:
            self.core.router.log_access(self)
        self._unpause(PAUSE_WAITING | PAUSE_UPSTREAM_FULL)
        self._flush_out()
        if self.close_after:
            self.state = S_CLOSING
            self.transport.close()
        elif self.queued:
            self.core.loop.call_soon(self._next_queued)

    def _bad_request(self, exc):
        # A malformed request (bad header, bad chunk framing): 400 and close (spec §7.4),
        # even when its head was already forwarded — the upstream attempt is dropped.
        if self.state == S_IDLE:
            self._open_request()
        elif self.state == S_CLOSING:
            return
        if self.resp_head_sent:
            self._drop_attempt()
            self._attempt_end(0)
            self._request_end(400)
            self._abort()
            return
        self._drop_attempt()
        self.retrying = False
        self._respond_error(self.core.router.bad_request_response(
            self, 400, str(exc)), True, 400)

    cdef _flush_up(self):
        cdef bytes data
        if self.up_out.len == 0 or self.up is None or self.state != S_ACTIVE:
            return
        data = self.up_out.take()
        if self.first_flush:
            self.first_flush = False
            # Keep the bytes of a request that fit in one write, to replay it on a fresh
            # connection (stale pooled connection) or for a retry.
            self.replay = data if self.req_done else None
        elif not self.replaying:
            self.replay = None
        self.replaying = False
        _count(self.client.stats, ST_SENT_BYTES, PyBytes_GET_SIZE(data))
        if not self.up.closed:
            self.up._write(data)

    cdef _flush_out(self):
        cdef bytes data
        if self.out.len == 0 or self.closed:
            return
        data = self.out.take()
        _count(self.core.stats, ST_SENT_BYTES, PyBytes_GET_SIZE(data))
        self._write(data)

    cdef _pause(self, int reason):
        self.pause_mask |= reason
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    cdef _unpause(self, int reason):
        self.pause_mask &= ~reason
        if self.pause_mask == 0 and self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    cdef _abort(self):
        if not self.closed:
            self.state = S_CLOSING
            self.transport.abort()

    # ---- lifecycle (graceful shutdown) ------------------------------------------------

    def is_busy(self):
        """A request is in flight or half-parsed on this connection."""
        return self.state != S_IDLE or self.in_msg or bool(self.queued)

    def close_when_idle(self):
        if self.closed:
            return
        if self.is_busy():
            self.close_after = True
        else:
            self.transport.close()

    # ---- for the router / access log (miss path only) -------------------------------

    def request_info(self):
        """(method, target, version, headers) of the request being routed."""
        cdef RequestHead r = self.cur
        return (r.method.decode("latin-1"),
                r.target_bytes.decode("latin-1"),
                f"{r.http_major}.{r.http_minor}",
                r.header_list())

    def override_values(self):
        cdef RequestHead r = self.cur
        return (r.ctx_dtab_values or [], r.dtab_values or [])

    def peer(self):
        return self.transport.get_extra_info("peername") if self.transport is not None else None

    def exchange_summary(self):
        cdef RequestHead r = self.cur
        return {
            "method": r.method.decode("latin-1") if r is not None and r.method else None,
            "uri": r.target_bytes.decode("latin-1") if r is not None else None,
            "host": r.host.decode("latin-1") if r is not None else None,
            "status": self.resp_status,
            "duration_us": now_us() - self.t0,
            "service": self.route.service_show if self.route is not None else None,
            "client": self.client.id_show if self.client is not None else None,
            "endpoint": self.endpoint.addr_text.decode() if self.endpoint is not None else None,
            "retries": self.retries,
        }


cdef extern from *:
    """
    #include <time.h>
    static inline long long fm_epoch_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    """
    long long fm_epoch_ms() nogil


cdef inline int64_t _epoch_ms() noexcept:
    return fm_epoch_ms()


cdef class UpstreamConn:

    def __init__(self, Endpoint endpoint):
        self.endpoint = endpoint
        self.resp = ResponseHead()

    def connection_made(self, transport):
        self.transport = transport
        self._write = transport.write
        self.parser = HttpResponseParser(self)
        self._feed = self.parser.feed_data

    def connection_lost(self, exc):
        cdef ServerConn down = self.down
        cdef Client client = self.endpoint.client
        if self.closed:
            return
        self.closed = True
        if client is not None:
            _count(client.stats, ST_CONNECTIONS, -1)
            _count(client.stats, ST_CLOSES, 1)
        if down is None:
            # idle in the pool: forget it
            try:
                self.endpoint.idle.remove(self)
            except ValueError:
                pass
        else:
            self.down = None
            down._upstream_lost(self, exc)
            down._flush_up()
            down._flush_out()
        self.parser = None
        self._feed = None

    def get_buffer(self, Py_ssize_t sizehint):
        return _recv_view

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef ServerConn down = self.down
        if down is None:
            # Bytes from an idle connection: the server is confused or closing. Drop it.
            self.transport.close()
            return
        self.resp_started = True
        if down.client is not None:
            _count(down.client.stats, ST_RECV_BYTES, nbytes)
        try:
            self._feed(_recv_view[:nbytes])
        except HttpParserError as exc:
            if self.down is not None:
                self.down = None
                self.closed = True
                self.transport.close()
                if not down.resp_head_sent:
                    down.up = None
                    down._attempt_end(0)
                    if down.endpoint is not None:
                        down.endpoint.outstanding -= 1
                        down.endpoint = None
                    down._respond_error(down.core.router.upstream_protocol_response(
                        down, down.route, down.client, self.endpoint, exc), False, 502)
                else:
                    down._attempt_end(0)
                    down._request_end(0)
                    down._abort()
            return
        finally:
            if self.swap_parser and not self.closed:
                self.swap_parser = False
                self.parser = HttpResponseParser(self)
                self._feed = self.parser.feed_data
        down._flush_out()

    def eof_received(self):
        return False

    def pause_writing(self):
        if self.down is not None:
            self.down._pause(PAUSE_UPSTREAM_FULL)

    def resume_writing(self):
        if self.down is not None:
            self.down._unpause(PAUSE_UPSTREAM_FULL)

    # ---- httptools callbacks (response) ---------------------------------------------

    def on_status(self, bytes reason):
        self.resp.reason = reason if not self.resp.reason else self.resp.reason + reason

    def on_header(self, bytes name, bytes value):
        self.resp.add_header(name, value)

    def on_headers_complete(self):
        cdef ServerConn down = self.down
        self.resp.keep_alive = self.parser.should_keep_alive()
        if down is not None:
            down._resp_head(self, self.parser.get_status_code())

    def on_body(self, bytes body):
        if self.down is not None:
            self.down._resp_body(body)

    def on_message_complete(self):
        cdef ServerConn down = self.down
        if down is not None:
            down._resp_complete(self)
        if not self.interim:
            self.resp.reset()

    # ---- pool -----------------------------------------------------------------------

    cdef _prepare(self, ServerConn down, bint head_request):
        self.down = down
        self.head_request = head_request
        self.resp_started = False
        self.interim = False
        self.resp.reset()
        self._set_reading(True)

    cdef _release(self):
        # Back to the endpoint's idle list (LIFO keeps the warmest connection on top),
        # reading, so a close by the server is noticed while it waits.
        cdef Endpoint ep = self.endpoint
        self.down = None
        if self.closed:
            return
        if ep.removed or len(ep.idle) >= (ep.client.max_idle if ep.client is not None else 64):
            self.transport.close()
            return
        self._set_reading(True)
        ep.idle.append(self)

    cdef _set_reading(self, bint on):
        if self.closed or self.transport is None:
            return
        if on and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        elif not on and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def close(self):
        if not self.closed and self.transport is not None:
            self.transport.close()

    def __repr__(self):
        return f"<UpstreamConn {self.endpoint!r} closed={self.closed}>"
