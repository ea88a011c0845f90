# Clients (one per bound name), their endpoints with idle upstream connections, and the
# routes the route cache hands to the request path. Python code (router.py) builds and
# updates these objects; the request path only reads them and moves connections.

from libc.stdint cimport uint64_t, int64_t
from fastmesh._core.stats cimport StatBlock


cdef uint64_t fast_random() noexcept nogil


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

    cdef Client pick(self)
