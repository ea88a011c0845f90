# cython: language_level=3
"""Request/response head work for the proxy: what httptools (llhttp) tokenizes lands here.

llhttp validates the syntax (token characters, no CR/LF/NUL in values, Content-Length vs
Transfer-Encoding conflicts, chunk framing). This module does the proxy's share: classify
each header without allocating, drop hop-by-hop headers (spec §6.4), pick out Host and the
linkerd headers (§6.1), keep every other header line verbatim, and rewrite absolute-form
request targets the way linkerd's ProxyRewriteFilter does (§4.1).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcpy, memmove
from libc.stdint cimport int64_t, uint64_t


cdef inline bint _ieq(const char* a, const char* lower, Py_ssize_t n) noexcept:
    # Case-insensitive compare against a lowercase literal. `| 0x20` folds ASCII letters;
    # for '-' and digits it is the identity, and the characters it could confuse with
    # them are not token characters, which llhttp has already refused.
    cdef Py_ssize_t i
    for i in range(n):
        if (a[i] | 0x20) != lower[i]:
            return False
    return True


cdef int classify_header(const char* s, Py_ssize_t n) noexcept:
    if n >= 4 and (s[0] | 0x20) == c'l' and s[1] == c'5' and _ieq(s, b"l5d-", 4):
        if n == 8 and _ieq(s + 4, b"dtab", 4):
            return H_L5D_DTAB
        if n == 12 and _ieq(s + 4, b"ctx-dtab", 8):
            return H_L5D_CTX_DTAB
        if n == 15 and _ieq(s + 4, b"dst-service", 11):
            return H_L5D_DST_SERVICE
        if n == 14 and _ieq(s + 4, b"dst-client", 10):
            return H_L5D_DST_CLIENT
        if n == 16 and _ieq(s + 4, b"dst-residual", 12):
            return H_L5D_DST_RESIDUAL
        if n == 9 and _ieq(s + 4, b"reqid", 5):
            return H_L5D_REQID
        if n == 13 and _ieq(s + 4, b"ctx-trace", 9):
            return H_L5D_CTX_TRACE
        if n == 10 and _ieq(s + 4, b"sample", 6):
            return H_L5D_SAMPLE
        if n == 17 and _ieq(s + 4, b"success-class", 13):
            return H_L5D_SUCCESS_CLASS
        if n == 13 and _ieq(s + 4, b"retryable", 9):
            return H_L5D_RETRYABLE
        return H_L5D_OTHER
    if n == 4:
        return H_HOST if _ieq(s, b"host", 4) else H_OTHER
    if n == 14:
        return H_CONTENT_LENGTH if _ieq(s, b"content-length", 14) else H_OTHER
    if n == 17:
        return H_TRANSFER_ENCODING if _ieq(s, b"transfer-encoding", 17) else H_OTHER
    if n == 10:
        if _ieq(s, b"connection", 10):
            return H_CONNECTION
        if _ieq(s, b"keep-alive", 10):
            return H_KEEP_ALIVE
        return H_OTHER
    if n == 2:
        return H_TE if _ieq(s, b"te", 2) else H_OTHER
    if n == 7:
        if _ieq(s, b"trailer", 7):
            return H_TRAILER
        if _ieq(s, b"upgrade", 7):
            return H_UPGRADE
        return H_OTHER
    if n == 18:
        return H_PROXY_AUTHENTICATE if _ieq(s, b"proxy-authenticate", 18) else H_OTHER
    if n == 19:
        return H_PROXY_AUTHORIZATION if _ieq(s, b"proxy-authorization", 19) else H_OTHER
    if n == 3:
        return H_VIA if _ieq(s, b"via", 3) else H_OTHER
    return H_OTHER


cdef class Buf:

    def __cinit__(self, Py_ssize_t initial=1024):
        self.data = <char*>PyMem_Malloc(initial)
        if self.data is NULL:
            raise MemoryError()
        self.cap = initial
        self.len = 0

    def __dealloc__(self):
        PyMem_Free(self.data)
        self.data = NULL

    cdef int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.len + extra
        cdef Py_ssize_t cap = self.cap
        cdef char* p
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        p = <char*>PyMem_Realloc(self.data, cap)
        if p is NULL:
            raise MemoryError()
        self.data = p
        self.cap = cap
        return 0

    cdef int add(self, const char* p, Py_ssize_t n) except -1:
        if self.len + n > self.cap:
            self.reserve(n)
        memcpy(self.data + self.len, p, n)
        self.len += n
        return 0

    cdef int add_bytes(self, bytes b) except -1:
        return self.add(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef int add_int(self, int64_t v) except -1:
        cdef char tmp[24]
        cdef int i = 24
        cdef bint neg = v < 0
        if neg:
            v = -v
        if v == 0:
            i -= 1
            tmp[i] = c'0'
        while v > 0:
            i -= 1
            tmp[i] = <char>(c'0' + v % 10)
            v //= 10
        if neg:
            i -= 1
            tmp[i] = c'-'
        return self.add(tmp + i, 24 - i)

    cdef int add_hex(self, Py_ssize_t v) except -1:
        cdef char tmp[20]
        cdef int i = 20
        cdef int d
        if v == 0:
            i -= 1
            tmp[i] = c'0'
        while v > 0:
            d = v & 15
            i -= 1
            tmp[i] = <char>(c'0' + d if d < 10 else c'a' + d - 10)
            v >>= 4
        return self.add(tmp + i, 20 - i)

    cdef bytes take(self):
        cdef bytes out = PyBytes_FromStringAndSize(self.data, self.len)
        self.len = 0
        return out

    cdef void clear(self) noexcept:
        self.len = 0

    # Python-visible helpers for tests and the reference benchmarks.
    def getvalue(self):
        return PyBytes_FromStringAndSize(self.data, self.len)

    def write(self, bytes b):
        self.add_bytes(b)


# ---- l5d-ctx-trace (finagle's wire format: spanId, parentId, traceId, flags as big-endian
# int64s, optionally a 64-bit traceIdHigh; base64 with padding; spec §6.1) ---------------

cdef const char* _B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


cdef inline int _b64val(char c) noexcept:
    if c'A' <= c <= c'Z':
        return c - c'A'
    if c'a' <= c <= c'z':
        return c - c'a' + 26
    if c'0' <= c <= c'9':
        return c - c'0' + 52
    if c == c'+' or c == c'-':
        return 62
    if c == c'/' or c == c'_':
        return 63
    return -1


cdef int decode_trace(bytes value, TraceCtx* out) noexcept:
    """Parse an l5d-ctx-trace value; 1 on success, 0 if it is not a valid trace."""
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef unsigned char raw[48]
    cdef int nraw = 0, acc_bits = 0, v, i, j
    cdef unsigned int acc = 0
    cdef uint64_t word
    while n > 0 and (s[n - 1] == c'=' or s[n - 1] == c' '):
        n -= 1
    for i in range(n):
        v = _b64val(<char>s[i])
        if v < 0:
            return 0
        acc = (acc << 6) | <unsigned int>v
        acc_bits += 6
        if acc_bits >= 8:
            acc_bits -= 8
            if nraw >= 48:
                return 0
            raw[nraw] = <unsigned char>((acc >> acc_bits) & 0xFF)
            nraw += 1
    if nraw != 32 and nraw != 40:
        return 0
    for j in range(nraw // 8):
        word = 0
        for i in range(8):
            word = (word << 8) | raw[j * 8 + i]
        if j == 0:
            out.span_id = word
        elif j == 1:
            out.parent_id = word
        elif j == 2:
            out.trace_id = word
        elif j == 3:
            out.flags = word
        else:
            out.trace_id_high = word
    out.has_high = nraw == 40
    return 1


cdef int write_trace(Buf out, TraceCtx* t) except -1:
    """Append the base64 l5d-ctx-trace value of `t`."""
    cdef unsigned char raw[40]
    cdef uint64_t words[5]
    cdef int nwords = 5 if t.has_high else 4
    cdef int nraw = nwords * 8, i, j
    cdef unsigned int triple
    words[0] = t.span_id
    words[1] = t.parent_id
    words[2] = t.trace_id
    words[3] = t.flags
    words[4] = t.trace_id_high
    for j in range(nwords):
        for i in range(8):
            raw[j * 8 + i] = <unsigned char>((words[j] >> (56 - 8 * i)) & 0xFF)
    out.reserve(60)
    i = 0
    while i + 2 < nraw:
        triple = (raw[i] << 16) | (raw[i + 1] << 8) | raw[i + 2]
        out.data[out.len] = _B64[(triple >> 18) & 63]
        out.data[out.len + 1] = _B64[(triple >> 12) & 63]
        out.data[out.len + 2] = _B64[(triple >> 6) & 63]
        out.data[out.len + 3] = _B64[triple & 63]
        out.len += 4
        i += 3
    if nraw - i == 2:
        triple = (raw[i] << 16) | (raw[i + 1] << 8)
        out.data[out.len] = _B64[(triple >> 18) & 63]
        out.data[out.len + 1] = _B64[(triple >> 12) & 63]
        out.data[out.len + 2] = _B64[(triple >> 6) & 63]
        out.data[out.len + 3] = c'='
        out.len += 4
    elif nraw - i == 1:
        triple = raw[i] << 16
        out.data[out.len] = _B64[(triple >> 18) & 63]
        out.data[out.len + 1] = _B64[(triple >> 12) & 63]
        out.data[out.len + 2] = c'='
        out.data[out.len + 3] = c'='
        out.len += 4
    return 0


def trace_roundtrip(bytes value):
    """Decode and re-encode an l5d-ctx-trace value (tests): (span, parent, trace, flags, out)."""
    cdef TraceCtx t
    cdef Buf b = Buf(64)
    if not decode_trace(value, &t):
        return None
    write_trace(b, &t)
    return (t.span_id, t.parent_id, t.trace_id, t.flags, b.getvalue())


cdef inline bint _is_scheme_char(char c) noexcept:
    return (c'a' <= c <= c'z') or (c'A' <= c <= c'Z') or (c'0' <= c <= c'9') \
        or c == c'+' or c == c'-' or c == c'.'


cdef int64_t _parse_length(bytes value) except -2:
    # Content-Length digits (llhttp has validated them already); no int() allocation.
    cdef const char* p = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i
    cdef int64_t v = 0
    for i in range(n):
        if c'0' <= p[i] <= c'9':
            v = v * 10 + (p[i] - c'0')
            if v > 0x7FFFFFFFFFFFFF:
                raise ValueError("Content-Length too large")
        elif p[i] != c' ' and p[i] != c'\t':
            raise ValueError(f"invalid Content-Length {value!r}")
    return v


cdef bytes _lower(const char* p, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef char* q = PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = p[i]
        q[i] = c + 32 if c'A' <= c <= c'Z' else c
    return out


cdef list _connection_tokens(bytes value):
    # Connection: close, keep-alive and upgrade are handled by framing; any other token
    # names a header that is hop-by-hop for this message (RFC 9110 §7.6.1).
    cdef list out = None
    cdef bytes tok
    cdef const char* v = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    # The common values need no token list (nearly every response carries one of them).
    if (n == 10 and _ieq(v, b"keep-alive", 10)) or (n == 5 and _ieq(v, b"close", 5)):
        return None
    for raw in value.split(b","):
        tok = raw.strip().lower()
        if tok and tok != b"close" and tok != b"keep-alive":
            if out is None:
                out = []
            out.append(tok)
    return out


cdef int _drop_named(Buf headers, list names) except -1:
    # Rare path: rebuild the kept header lines without those named in Connection. The
    # buffer holds only lines we wrote ("Name: value\r\n", no CR/LF inside a value since
    # llhttp refuses them), so scanning it is exact.
    cdef Buf rebuilt = Buf(headers.len + 1)
    cdef Py_ssize_t start = 0, colon, end
    cdef char* d = headers.data
    while start < headers.len:
        colon = start
        while colon < headers.len and d[colon] != c':':
            colon += 1
        end = colon
        while end + 1 < headers.len and not (d[end] == c'\r' and d[end + 1] == c'\n'):
            end += 1
        end += 2
        if _lower(d + start, colon - start) not in names:
            rebuilt.add(d + start, end - start)
        start = end
    headers.len = 0
    headers.add(rebuilt.data, rebuilt.len)
    return 0


cdef class RequestHead:

    def __cinit__(self):
        # Small to start (1,000 idle keep-alive connections must stay cheap); Buf doubles.
        self.target = Buf(64)
        self.headers = Buf(512)
        self.reset()

    cdef void reset(self) noexcept:
        self.target.len = 0
        self.headers.len = 0
        self.method = None
        self.http_major = 1
        self.http_minor = 1
        self.keep_alive = True
        self.chunked = False
        self.has_length = False
        self.content_length = 0
        self.expect_continue = False
        self.host = b""
        self.via = None
        self.dtab_values = None
        self.ctx_dtab_values = None
        self.reqid = None
        self.ctx_trace = None
        self.key_header = None
        self.conn_tokens = None
        self.header_bytes = 0
        self.nheaders = 0
        self.error_status = 0
        self.complete = False
        self.body = None

    cdef int add_header(self, bytes name, bytes value) except -1:
        cdef const char* n = PyBytes_AS_STRING(name)
        cdef Py_ssize_t nlen = PyBytes_GET_SIZE(name)
        cdef int kind = classify_header(n, nlen)
        self.header_bytes += nlen + PyBytes_GET_SIZE(value) + 4
        if self.key_header_name is not None and self.key_header is None \
                and nlen == PyBytes_GET_SIZE(self.key_header_name) \
                and _ieq(n, PyBytes_AS_STRING(self.key_header_name), nlen):
            self.key_header = value
        if kind == H_OTHER or ((kind == H_L5D_OTHER or kind == H_L5D_SUCCESS_CLASS
                                or kind == H_L5D_RETRYABLE) and not self.clear_context):
            if self.nheaders >= MAX_HEADERS:
                self.error_status = 431
                return 0
            self.nheaders += 1
            self.headers.add(n, nlen)
            self.headers.add(b": ", 2)
            self.headers.add_bytes(value)
            self.headers.add(b"\r\n", 2)
            if nlen == 6 and _ieq(n, b"expect", 6):
                self.expect_continue = value.lower() == b"100-continue"
            return 0
        if kind == H_HOST:
            if self.host:
                # Two Host headers are a smuggling vector; RFC 9112 §3.2 says 400.
                self.error_status = 400
            self.host = value
        elif kind == H_CONTENT_LENGTH:
            self.has_length = True
            self.content_length = _parse_length(value)
        elif kind == H_TRANSFER_ENCODING:
            self.chunked = value.rstrip().lower().endswith(b"chunked")
        elif kind == H_CONNECTION:
            tokens = _connection_tokens(value)
            if tokens is not None:
                if self.conn_tokens is None:
                    self.conn_tokens = tokens
                else:
                    self.conn_tokens.extend(tokens)
        elif kind == H_VIA:
            self.via = value if self.via is None else self.via + b", " + value
        elif self.clear_context:
            pass  # every other l5d-* header is dropped at an untrusted edge (spec §6.5)
        elif kind == H_L5D_DTAB:
            if self.dtab_values is None:
                self.dtab_values = [value]
            else:
                self.dtab_values.append(value)
        elif kind == H_L5D_CTX_DTAB:
            if self.ctx_dtab_values is None:
                self.ctx_dtab_values = [value]
            else:
                self.ctx_dtab_values.append(value)
        elif kind == H_L5D_REQID:
            self.reqid = value
        elif kind == H_L5D_CTX_TRACE:
            self.ctx_trace = value
        # else: hop-by-hop (TE, Trailer, Upgrade, Keep-Alive, Proxy-*) or l5d-dst-* /
        # l5d-sample, which this hop rewrites or consumes.
        return 0

    cdef int finish(self) except -1:
        """Headers are complete: apply the absolute-form rewrite and Connection drops."""
        cdef char* t = self.target.data
        cdef Py_ssize_t n = self.target.len
        cdef Py_ssize_t i = 0, auth_start, auth_end
        if n > 0 and t[0] != c'/':
            # absolute-form ("http://world/path"): Host := authority, target := the rest
            while i < n and _is_scheme_char(t[i]):
                i += 1
            if i > 0 and i + 2 < n and t[i] == c':' and t[i + 1] == c'/' and t[i + 2] == c'/':
                auth_start = i + 3
                auth_end = auth_start
                while auth_end < n and t[auth_end] != c'/' and t[auth_end] != c'?' \
                        and t[auth_end] != c'#':
                    auth_end += 1
                self.host = PyBytes_FromStringAndSize(t + auth_start, auth_end - auth_start)
                if auth_end == n:
                    self.target.len = 0
                    self.target.add(b"/", 1)
                elif t[auth_end] != c'/':
                    # "http://h?q" has an empty path; send "/?q" (spec §4.1 note)
                    memmove(t + 1, t + auth_end, n - auth_end)
                    t[0] = c'/'
                    self.target.len = n - auth_end + 1
                else:
                    memmove(t, t + auth_end, n - auth_end)
                    self.target.len = n - auth_end
        if self.conn_tokens is not None:
            _drop_named(self.headers, self.conn_tokens)
        return 0

    cdef bint has_override(self) noexcept:
        return self.dtab_values is not None or self.ctx_dtab_values is not None

    cdef Py_ssize_t path_prefix_end(self, int segments) noexcept:
        """Offset just past the first `segments` path segments, or -1 if there are fewer."""
        cdef char* t = self.target.data
        cdef Py_ssize_t n = self.target.len
        cdef Py_ssize_t i = 0, end = n
        cdef int seen = 0
        for i in range(n):
            if t[i] == c'?' or t[i] == c'#':
                end = i
                break
        if segments == 0:
            return 0
        i = 0
        while i < end:
            if t[i] == c'/':
                i += 1
                # a segment runs to the next '/'
                while i < end and t[i] != c'/':
                    i += 1
                seen += 1
                if seen == segments:
                    return i
            else:
                i += 1
        return -1

    cdef bytes consumed_target(self, int segments):
        cdef Py_ssize_t cut = self.path_prefix_end(segments)
        cdef char* t = self.target.data
        cdef Py_ssize_t n = self.target.len
        if cut <= 0:
            return PyBytes_FromStringAndSize(t, n)
        if cut >= n:
            return b"/"
        if t[cut] == c'/':
            return PyBytes_FromStringAndSize(t + cut, n - cut)
        return b"/" + PyBytes_FromStringAndSize(t + cut, n - cut)

    cdef list header_list(self):
        """(name, value) str pairs for the Python identifiers (route-cache miss only)."""
        cdef list out = []
        if self.host:
            out.append(("Host", self.host.decode("latin-1")))
        for line in PyBytes_FromStringAndSize(self.headers.data, self.headers.len).split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                out.append((name.decode("latin-1"), value.decode("latin-1")))
        return out

    # Python-visible accessors (tests, miss path)
    @property
    def target_bytes(self):
        return PyBytes_FromStringAndSize(self.target.data, self.target.len)

    @property
    def headers_bytes(self):
        return PyBytes_FromStringAndSize(self.headers.data, self.headers.len)


cdef class ResponseHead:

    def __cinit__(self):
        self.headers = Buf(512)
        self.reset()

    cdef void reset(self) noexcept:
        self.headers.len = 0
        self.reason = b""
        self.status = 0
        self.via = None
        self.chunked = False
        self.has_length = False
        self.content_length = 0
        self.keep_alive = True
        self.l5d_retryable = False
        self.conn_tokens = None
        self.nheaders = 0

    cdef int add_header(self, bytes name, bytes value) except -1:
        cdef const char* n = PyBytes_AS_STRING(name)
        cdef Py_ssize_t nlen = PyBytes_GET_SIZE(name)
        cdef int kind = classify_header(n, nlen)
        if kind == H_L5D_RETRYABLE:
            self.l5d_retryable = value.strip().lower() == b"true"
        if kind == H_OTHER or kind == H_L5D_OTHER or kind == H_L5D_REQID or kind == H_L5D_RETRYABLE \
                or kind == H_L5D_CTX_TRACE or kind == H_L5D_DTAB or kind == H_L5D_CTX_DTAB \
                or kind == H_L5D_DST_SERVICE or kind == H_L5D_DST_CLIENT \
                or kind == H_L5D_DST_RESIDUAL or kind == H_L5D_SAMPLE or kind == H_HOST:
            self.nheaders += 1
            self.headers.add(n, nlen)
            self.headers.add(b": ", 2)
            self.headers.add_bytes(value)
            self.headers.add(b"\r\n", 2)
        elif kind == H_CONTENT_LENGTH:
            self.has_length = True
            self.content_length = _parse_length(value)
        elif kind == H_TRANSFER_ENCODING:
            self.chunked = value.rstrip().lower().endswith(b"chunked")
        elif kind == H_CONNECTION:
            tokens = _connection_tokens(value)
            if tokens is not None:
                if self.conn_tokens is None:
                    self.conn_tokens = tokens
                else:
                    self.conn_tokens.extend(tokens)
        elif kind == H_VIA:
            self.via = value if self.via is None else self.via + b", " + value
        # else: hop-by-hop, or l5d-success-class which this router sets itself
        return 0

    cdef int drop_connection_named(self) except -1:
        if self.conn_tokens is not None:
            _drop_named(self.headers, self.conn_tokens)
        return 0
