# The buffer pump: downstream (ServerConn) and upstream (UpstreamConn) BufferedProtocols
# with both legs' flow control coupled. See pump.pyx for the exchange state machine.

from libc.stdint cimport int64_t
from fastmesh._core.http cimport Buf, RequestHead, ResponseHead
from fastmesh._core.pool cimport Endpoint, Client, Route
from fastmesh._core.stats cimport StatBlock


cdef enum:  # ExchangeState
    S_IDLE = 0          # no request in flight
    S_WAIT_ROUTE        # the Python router is binding the name (pending namer)
    S_WAIT_CONN         # head written to up_out, opening an upstream connection
    S_ACTIVE            # attached to an upstream connection, pumping
    S_RETRY_WAIT        # a failed attempt is drained or backing off before the retry
    S_CLOSING           # an error answer is out; the connection closes after the flush


cdef enum:  # PauseReason (bit mask)
    PAUSE_UPSTREAM_FULL = 1   # upstream transport asked us to stop writing
    PAUSE_WAITING = 2         # routing/connecting: do not read more body yet
    PAUSE_PIPELINE = 4        # a pipelined request is queued behind the current one


cdef enum:  # KeyKind: how the route-cache key is built
    K_HOST = 0          # io.l5d.header.token on Host (the default identifier)
    K_HEADER = 1        # io.l5d.header.token / io.l5d.header on another header
    K_METHOD_HOST = 2   # io.l5d.methodAndHost
    K_PATH = 3          # io.l5d.path (first N segments)
    K_STATIC = 4        # io.l5d.static
    K_LIST = 5          # a list of identifiers: the key joins each one's key


cdef class ServerCore:
    # Per listening server: what every accepted connection shares.
    cdef public object router         # fastmesh.router.Router (miss path, error texts)
    cdef public dict routes           # the route cache: key bytes -> Route (read per request)
    cdef public StatBlock stats
    cdef public object loop
    cdef public bint clear_context
    cdef public int max_call_depth
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_target_bytes
    cdef public int key_kind
    cdef public bytes key_header_name
    cdef public int key_path_segments
    cdef public bint key_uri_in_dst
    cdef public list key_list         # [(kind, header_name, segments, uri_in_dst)] for K_LIST
    cdef public set conns             # open downstream connections (graceful shutdown)
    cdef public object access_log     # callable or None: the router logs each exchange
    cdef public int max_concurrent    # maxConcurrentRequests, 0 = unlimited
    cdef public int active            # requests in flight on this server (this process)
    cdef public bytes timestamp_header  # timestampHeader name, or None
    cdef public bint tcp_keepalive    # socketOptions.keepAlive on accepted connections
    cdef public bint tls              # a TLS server: count handshakes


cdef class UpstreamConn


cdef class ServerConn:
    cdef ServerCore core
    cdef object transport
    cdef object _write
    cdef object parser
    cdef object _feed
    cdef RequestHead req          # the request httptools is filling
    cdef RequestHead cur          # the request whose exchange is in flight
    cdef RequestHead spare        # reusable head object for the next request
    cdef list queued              # pipelined requests parsed ahead (rare)
    cdef bint in_msg
    cdef bint parsing_queued
    cdef Py_ssize_t head_bytes
    cdef int state
    cdef int pause_mask
    cdef bint read_paused
    cdef bint write_paused
    cdef bint closed
    cdef bint close_after
    cdef UpstreamConn up
    cdef Buf up_out
    cdef Buf out
    cdef Route route
    cdef Client client
    cdef Endpoint endpoint
    cdef int64_t t0
    cdef bint req_done
    cdef bint resp_done
    cdef bint resp_head_sent
    cdef bint resp_chunked_out
    cdef bint resp_no_body
    cdef int resp_status
    # replay: the whole request as first written upstream (head + body), kept while it
    # fits one write, to resend on a stale pooled connection or for a retry
    cdef bytes replay
    cdef Py_ssize_t replay_head_len
    cdef bint first_flush
    cdef bint replaying
    cdef int attempts             # connection attempts (requeues included)
    cdef int retries              # classifier retries
    cdef bint retrying            # draining a failed attempt's response before retrying
    cdef double backoff_prev_ms
    # exactly-once accounting per scope
    cdef bint srv_open
    cdef bint svc_open
    cdef bint cli_open
    cdef object total_timer
    cdef object attempt_timer

    cdef _begin_msg(self)
    cdef _open_request(self)
    cdef _start_exchange(self)
    cdef bytes _route_key(self, RequestHead req)
    cdef _on_route(self, Route route)
    cdef _write_request_head(self, RequestHead req, Route route, Client client)
    cdef _use_endpoint(self, Endpoint ep)
    cdef _attach(self, UpstreamConn up, bint reused)
    cdef _connect(self, Endpoint ep)
    cdef _req_body(self, bytes body)
    cdef _req_complete(self)
    cdef _resp_head(self, UpstreamConn up, int status)
    cdef _resp_body(self, bytes body)
    cdef _resp_complete(self, UpstreamConn up)
    cdef _finish_exchange(self)
    cdef _upstream_lost(self, UpstreamConn up, object exc)
    cdef bint _should_retry(self, UpstreamConn up, int status, bint timeout)
    cdef _schedule_retry(self)
    cdef _drop_attempt(self)
    cdef _attempt_end(self, int status)
    cdef _request_end(self, int status)
    cdef _respond_error(self, bytes response, bint close, int status)
    cdef _flush_up(self)
    cdef _flush_out(self)
    cdef _pause(self, int reason)
    cdef _unpause(self, int reason)
    cdef _abort(self)


cdef class UpstreamConn:
    cdef object transport
    cdef object _write
    cdef object parser
    cdef object _feed
    cdef public Endpoint endpoint
    cdef ServerConn down
    cdef ResponseHead resp
    cdef bint closed
    cdef bint resp_started        # response bytes arrived for the current exchange
    cdef bint interim             # parsing a 1xx interim response
    cdef bint swap_parser         # HEAD answered: the parser must be replaced
    cdef bint read_paused
    cdef bint head_request
    cdef bint reused              # taken from the idle pool (replayable on early close)

    cdef _prepare(self, ServerConn down, bint head_request)
    cdef _release(self)
    cdef _set_reading(self, bint on)
