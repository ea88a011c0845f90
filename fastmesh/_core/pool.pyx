# cython: language_level=3
"""Per-endpoint upstream connection pools and the balancer (power of two choices).

Ownership: an idle upstream connection is referenced only by its endpoint's `idle` list;
an active one only by the downstream connection it serves. `Endpoint.outstanding` counts
requests in flight and is the p2c load (spec §9.1: pick two distinct endpoints at random,
take the less loaded). Python builds Client/Route objects on a route-cache miss and swaps
`Client.endpoints` when discovery changes the addresses; the request path never blocks
on either.
"""

import os

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint64_t, int64_t
from fastmesh._core.stats cimport StatBlock, now_us


cdef uint64_t _rng_state = <uint64_t>int.from_bytes(os.urandom(8), "little") | 1


cdef uint64_t fast_random() noexcept nogil:
    # xorshift64*: a cheap, per-process PRNG for load balancing and trace/request ids.
    # Not for anything secret.
    global _rng_state
    cdef uint64_t x = _rng_state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    _rng_state = x
    return x * <uint64_t>0x2545F4914F6CDD1D


def reseed():
    """Fork-safety: each worker reseeds so they do not pick identical sequences."""
    global _rng_state
    _rng_state = <uint64_t>int.from_bytes(os.urandom(8), "little") | 1


def random_u64():
    return fast_random()


cdef int method_bit(bytes method) noexcept:
    cdef Py_ssize_t n = len(method)
    cdef const char* m = method
    if n == 3 and m[0] == c'G':
        return M_GET
    if n == 4 and m[0] == c'H':
        return M_HEAD
    if n == 4 and m[0] == c'P' and m[1] == c'O':
        return M_POST
    if n == 3 and m[0] == c'P':
        return M_PUT
    if n == 6 and m[0] == c'D':
        return M_DELETE
    if n == 7 and m[0] == c'O':
        return M_OPTIONS
    if n == 5 and m[0] == c'T':
        return M_TRACE
    if n == 5 and m[0] == c'P':
        return M_PATCH
    return M_OTHER


def retryable_method_mask(str kind):
    """The method bits whose 5xx a response classifier kind lets us retry (spec §9.4)."""
    return {"io.l5d.http.retryableRead5XX": M_READ,
            "io.l5d.http.retryableIdempotent5XX": M_IDEMPOTENT,
            "io.l5d.http.retryableAll5XX": M_ALL}.get(kind, 0)


cdef class RetryBudget:

    def __init__(self, int ttl_secs=10, double min_retries_per_sec=10.0,
                 double percent_can_retry=0.2):
        if not 1 <= ttl_secs <= 60:
            raise ValueError("ttlSecs must be 1..60")
        self.ttl = ttl_secs
        self.min_per_sec = min_retries_per_sec
        self.percent = percent_can_retry
        for i in range(BUDGET_SLOTS):
            self.epoch[i] = -1
            self.deposits[i] = 0
            self.withdrawals[i] = 0

    cdef void deposit(self, int64_t now) noexcept:
        cdef int64_t sec = now // 1000000
        cdef int slot = <int>(sec % self.ttl)
        if self.epoch[slot] != sec:
            self.epoch[slot] = sec
            self.deposits[slot] = 0
            self.withdrawals[slot] = 0
        self.deposits[slot] += 1

    cdef bint try_withdraw(self, int64_t now) noexcept:
        cdef int64_t sec = now // 1000000
        cdef int slot = <int>(sec % self.ttl)
        cdef int64_t deps = 0, wds = 0
        cdef int i
        if self.epoch[slot] != sec:
            self.epoch[slot] = sec
            self.deposits[slot] = 0
            self.withdrawals[slot] = 0
        for i in range(self.ttl):
            if self.epoch[i] > sec - self.ttl:
                deps += self.deposits[i]
                wds += self.withdrawals[i]
        if wds + 1 > self.percent * deps + self.min_per_sec * self.ttl:
            return False
        self.withdrawals[slot] += 1
        return True

    def py_deposit(self, int64_t now_us_):
        self.deposit(now_us_)

    def py_try_withdraw(self, int64_t now_us_):
        return self.try_withdraw(now_us_)


cdef class Endpoint:

    def __init__(self, str host, int port, Client client=None):
        self.host = host
        self.port = port
        self.addr_text = f"{host}:{port}".encode()
        self.idle = []
        self.outstanding = 0
        self.consecutive_failures = 0
        self.down_until = 0
        self.client = client
        self.removed = False

    def __repr__(self):
        return f"Endpoint({self.host}:{self.port}, out={self.outstanding}, idle={len(self.idle)})"


cdef class Client:

    def __init__(self, str id_show, list endpoints, tls=None, StatBlock stats=None,
                 owner=None, double connect_timeout=5.0, int max_idle=256,
                 double attempt_timeout=0.0):
        self.id_show = id_show
        self.dst_client_hdr = b"l5d-dst-client: " + id_show.encode("utf-8") + b"\r\n"
        self.endpoints = endpoints
        self.tls = tls
        self.stats = stats
        self.owner = owner
        self.connect_timeout = connect_timeout
        self.attempt_timeout = attempt_timeout
        self.max_idle = max_idle

    cdef Endpoint pick(self, int64_t now):
        cdef list eps = self.endpoints
        cdef Py_ssize_t n = len(eps)
        cdef Py_ssize_t i, j
        cdef Endpoint a, b
        if n == 0:
            return None
        if n == 1:
            return <Endpoint>eps[0]
        if now == 0:
            now = now_us()
        i = <Py_ssize_t>(fast_random() % <uint64_t>n)
        j = <Py_ssize_t>(fast_random() % <uint64_t>(n - 1))
        if j >= i:
            j += 1
        a = <Endpoint>eps[i]
        b = <Endpoint>eps[j]
        # An endpoint marked down (recent connect failures) loses to a healthy one.
        if (a.down_until > now) != (b.down_until > now):
            return b if a.down_until > now else a
        return a if a.outstanding <= b.outstanding else b

    def pick_endpoint(self, int64_t now=0):
        return self.pick(now)

    def set_endpoints(self, list endpoints):
        """Swap the address set in place (discovery update); drained endpoints close idle conns."""
        cdef Endpoint ep
        keep = {(e.host, e.port): e for e in self.endpoints}
        new = []
        for ep in endpoints:
            old = keep.pop((ep.host, ep.port), None)
            new.append(old if old is not None else ep)
            if old is None:
                ep.client = self
        for ep in keep.values():
            ep.removed = True
            for conn in ep.idle:
                conn.close()
            ep.idle = []
        self.endpoints = new

    def __repr__(self):
        return f"Client({self.id_show}, {self.endpoints})"


cdef class Route:

    def __init__(self, *, int err_status=0, bytes err_response=None, bint err_close=False,
                 list clients=None, list weights=None, str service_show="",
                 bytes residual=b"", bytes ctx_dtab=b"", StatBlock service_stats=None,
                 int consume_segments=0, int retry_methods=0, bint failure_5xx=True,
                 RetryBudget budget=None, double backoff_min_ms=0.0,
                 double backoff_max_ms=0.0, double total_timeout=0.0):
        cdef int i
        cdef double acc = 0.0
        self.err_status = err_status
        self.err_response = err_response
        self.err_close = err_close
        self.clients = clients if clients is not None else []
        self.weights = weights if weights is not None else [1.0] * len(self.clients)
        self.nclients = len(self.clients)
        self.service_show = service_show
        self.dst_service_hdr = (b"l5d-dst-service: " + service_show.encode("utf-8") + b"\r\n"
                                if service_show else b"")
        self.dst_residual_hdr = (b"l5d-dst-residual: " + residual + b"\r\n"
                                 if residual and residual != b"/" else b"")
        self.ctx_dtab_hdr = (b"l5d-ctx-dtab: " + ctx_dtab + b"\r\n") if ctx_dtab else b""
        self.service_stats = service_stats
        self.consume_segments = consume_segments
        self.retry_methods = retry_methods
        self.failure_5xx = failure_5xx
        self.budget = budget
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.total_timeout = total_timeout
        if self.nclients > 1:
            self.cum_weights = <double*>PyMem_Malloc(self.nclients * sizeof(double))
            if self.cum_weights is NULL:
                raise MemoryError()
            for i in range(self.nclients):
                acc += float(self.weights[i])
                self.cum_weights[i] = acc

    def __dealloc__(self):
        if self.cum_weights is not NULL:
            PyMem_Free(self.cum_weights)

    cdef Client pick(self):
        # A union picks a member per request in proportion to its weight (spec §3.5).
        cdef double r
        cdef int i
        if self.nclients == 1:
            return <Client>self.clients[0]
        if self.nclients == 0:
            return None
        r = (fast_random() >> 11) * (1.0 / 9007199254740992.0) * self.cum_weights[self.nclients - 1]
        for i in range(self.nclients):
            if r < self.cum_weights[i]:
                return <Client>self.clients[i]
        return <Client>self.clients[self.nclients - 1]

    def pick_client(self):
        return self.pick()

    @property
    def is_error(self):
        return self.err_status != 0
