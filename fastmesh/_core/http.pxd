# Declarations shared by the request path: the growable byte buffer every forwarded head
# is written into, header classification, and the per-message head accumulators that
# httptools' callbacks feed (see http.pyx for the contracts).

from libc.stdint cimport int64_t, uint64_t


cdef enum:  # HeaderKind
    H_OTHER = 0
    H_HOST
    H_CONTENT_LENGTH
    H_TRANSFER_ENCODING
    H_CONNECTION
    H_KEEP_ALIVE
    H_TE
    H_TRAILER
    H_UPGRADE
    H_PROXY_AUTHENTICATE
    H_PROXY_AUTHORIZATION
    H_VIA
    H_L5D_DTAB
    H_L5D_CTX_DTAB
    H_L5D_DST_SERVICE
    H_L5D_DST_CLIENT
    H_L5D_DST_RESIDUAL
    H_L5D_REQID
    H_L5D_CTX_TRACE
    H_L5D_SAMPLE
    H_L5D_SUCCESS_CLASS
    H_L5D_RETRYABLE
    H_L5D_OTHER          # any other l5d-* header (passes through unless clearContext)


cdef enum:  # limits
    MAX_HEADERS = 256         # beyond this many header lines a request is refused (431)


cdef int classify_header(const char* name, Py_ssize_t n) noexcept


cdef struct TraceCtx:
    uint64_t span_id
    uint64_t parent_id
    uint64_t trace_id
    uint64_t flags
    uint64_t trace_id_high
    bint has_high


cdef class Buf:
    # A growable byte buffer owned by exactly one connection. Its bytes are copied out
    # (take()) before they are handed to a transport, so a transport never holds a view
    # of memory we will overwrite (DESIGN: buffers handed to write() are borrowed).
    cdef char* data
    cdef Py_ssize_t len
    cdef Py_ssize_t cap

    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int add(self, const char* p, Py_ssize_t n) except -1
    cdef int add_bytes(self, bytes b) except -1
    cdef int add_int(self, int64_t v) except -1
    cdef int add_hex(self, Py_ssize_t v) except -1
    cdef bytes take(self)
    cdef void clear(self) noexcept


cdef int decode_trace(bytes value, TraceCtx* out) noexcept
cdef int write_trace(Buf out, TraceCtx* t) except -1


cdef class RequestHead:
    # One request head as httptools reported it, with the proxy's header work already
    # done: hop-by-hop headers dropped, linkerd headers picked out, every kept header
    # line stored verbatim ("Name: value\r\n") in `headers`.
    cdef Buf target           # request-target as sent (absolute-form until finish())
    cdef Buf headers          # kept header lines
    cdef bytes method
    cdef int http_major
    cdef int http_minor
    cdef bint keep_alive
    cdef bint chunked         # request body arrives chunked (we forward it chunked)
    cdef bint has_length
    cdef int64_t content_length
    cdef bint expect_continue
    cdef bytes host           # Host value (absolute-form authority wins), b"" if absent
    cdef bytes via            # incoming Via value or None
    cdef list dtab_values     # l5d-dtab values in order, or None
    cdef list ctx_dtab_values # l5d-ctx-dtab values in order, or None
    cdef bytes reqid          # incoming l5d-reqid, or None
    cdef bytes ctx_trace      # incoming l5d-ctx-trace, or None
    cdef bytes key_header     # value of the identifier's header (non-Host identifiers)
    cdef bytes key_header_name  # lowercased name the identifier reads, or None
    cdef list conn_tokens     # extra Connection tokens naming headers to drop, or None
    cdef bint clear_context   # drop every l5d-* header (server clearContext)
    cdef Py_ssize_t header_bytes
    cdef int nheaders
    cdef int error_status     # 0, or 414/431 when a limit was crossed while parsing
    cdef bint complete        # on_message_complete seen
    cdef list body            # body pieces kept while no upstream is attached, or None

    cdef void reset(self) noexcept
    cdef int add_header(self, bytes name, bytes value) except -1
    cdef int finish(self) except -1
    cdef bint has_override(self) noexcept
    cdef Py_ssize_t path_prefix_end(self, int segments) noexcept
    cdef bytes consumed_target(self, int segments)
    cdef list header_list(self)


cdef class ResponseHead:
    # The response head coming back from upstream, hop-by-hop headers dropped.
    cdef Buf headers
    cdef bytes reason
    cdef int status
    cdef bytes via
    cdef bint chunked
    cdef bint has_length
    cdef int64_t content_length
    cdef bint keep_alive
    cdef bint l5d_retryable   # `l5d-retryable: true`: a failure the caller may retry (§9.4)
    cdef list conn_tokens
    cdef int nheaders

    cdef void reset(self) noexcept
    cdef int add_header(self, bytes name, bytes value) except -1
    cdef int drop_connection_named(self) except -1
