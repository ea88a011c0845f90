# Clients (one per bound name), their endpoints with idle upstream connections, and the
# routes the route cache hands to the request path. Python code (router.py) builds and
# updates these objects; the request path only reads them and moves connections.

from libc.stdint cimport uint64_t, int64_t
from fastmesh._core.stats cimport StatBlock


cdef uint64_t fast_random() noexcept nogil


cdef enum:  # method bits for a classifier's retryable methods
    M_GET = 1
    M_HEAD = 2
    M_OPTIONS = 4
    M_TRACE = 8
    M_PUT = 16
    M_DELETE = 32
    M_POST = 64
    M_PATCH = 128
    M_OTHER = 256
    M_READ = M_GET | M_HEAD | M_OPTIONS | M_TRACE
    M_IDEMPOTENT = M_READ | M_PUT | M_DELETE
    M_ALL = 0xFFFF
    BUDGET_SLOTS = 64             # one per second of the budget's ttl (at most 60)


cdef int method_bit(bytes method) noexcept


cdef class RetryBudget:
    # linkerd's retry budget (spec §9.3) over a sliding window of `ttl` one-second slots:
    # retries allowed = percent_can_retry * requests + min_retries_per_sec * ttl.
    cdef int ttl
    cdef double min_per_sec
    cdef double percent
    cdef int64_t[BUDGET_SLOTS] epoch
    cdef int64_t[BUDGET_SLOTS] deposits
    cdef int64_t[BUDGET_SLOTS] withdrawals

    cdef void deposit(self, int64_t now) noexcept
    cdef bint try_withdraw(self, int64_t now) noexcept


cdef class Endpoint:
    cdef readonly str host
    cdef readonly int port
    cdef readonly bytes addr_text       # b"10.0.0.1:4141", for error texts
    cdef public list idle               # idle upstream connections, LIFO (append/pop)
    cdef public int outstanding         # requests in flight here (p2c load)
    cdef public int consecutive_failures
    cdef public int64_t down_until      # monotonic µs (stats.now_us) before which p2c avoids it
    cdef public Client client
    cdef public bint removed            # dropped by discovery: drain, never pool again


cdef class Client:
    cdef readonly str id_show           # "/$/inet/127.0.0.1/8080"
    cdef readonly bytes dst_client_hdr  # b"l5d-dst-client: /$/inet/...\r\n"
    cdef public list endpoints          # replaced as a whole when addresses change
    cdef public object tls              # fastmesh.tls.ClientTls or None (plaintext)
    cdef public StatBlock stats
    cdef public object owner            # the router-level object that built this client
    cdef public double connect_timeout
    cdef public double attempt_timeout  # requestAttemptTimeoutMs in s, 0 = none
    cdef public int max_idle            # idle connections kept per endpoint

    cdef Endpoint pick(self, int64_t now)


cdef class Route:
    # What one identified name resolves to. Either an error (err_status != 0, with a
    # ready-made response) or a weighted choice of clients.
    cdef public int err_status
    cdef public bytes err_response
    cdef public bint err_close           # close the connection after the error response
    cdef public list clients
    cdef public list weights
    cdef double* cum_weights
    cdef int nclients
    cdef public bytes dst_service_hdr    # b"l5d-dst-service: /svc/world\r\n"
    cdef public bytes dst_residual_hdr   # b"l5d-dst-residual: /a\r\n" or b""
    cdef public bytes ctx_dtab_hdr       # b"l5d-ctx-dtab: ...\r\n" (override requests) or b""
    cdef public StatBlock service_stats
    cdef public int consume_segments     # io.l5d.path consume: segments to strip, else 0
    cdef public str service_show
    # service policy (spec §9.3-9.5): which methods' 5xx may be retried, whether 5xx is
    # a failure at all (allSuccessful), the budget, the backoff, the total timeout
    cdef public int retry_methods
    cdef public bint failure_5xx
    cdef public RetryBudget budget
    cdef public double backoff_min_ms
    cdef public double backoff_max_ms
    cdef public double total_timeout     # s, 0 = none

    cdef Client pick(self)
