"""The header contract of the Cython request path, through a real `fastmesh run` process.

What the backend receives and what the client gets back, byte for byte where linkerd
pins it down (spec §4.1 absolute-form, §6.1 l5d headers, §6.4 hop-by-hop, §6.5
clearContext, trace propagation).
"""

import base64
import re
import struct

import pytest

from tests.support import CaptureBackend, FastmeshProcess, free_port, raw_exchange


def _config(backend_port: int, port: int, *, clear_context: bool = False) -> str:
    return f"""
admin: {{ip: 127.0.0.1, port: {{admin}}}}
routers:
- protocol: http
  label: outgoing
  dtab: |
    /svc/world => /$/inet/127.1/{backend_port}/extra/residual;
    /svc/other => /$/inet/127.0.0.1/{backend_port};
  servers:
  - ip: 127.0.0.1
    port: {port}
    clearContext: {str(clear_context).lower()}
"""


@pytest.fixture(scope="module")
def mesh():
    backend = CaptureBackend(response=(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-drop-me\r\n"
        b"X-Drop-Me: secret\r\nKeep-Alive: timeout=5\r\nVia: 1.1 upstream\r\n"
        b"l5d-success-class: 0.5\r\nX-Kept: 1\r\n\r\nok"))
    port = free_port()
    with FastmeshProcess(_config(backend.port, port)) as fm:
        yield fm, backend, port
    backend.close()


def _names(headers):
    return [n.lower() for n, _ in headers]


def _get(headers, name):
    return [v for n, v in headers if n.lower() == name]


def test_absolute_form_sets_host_and_origin_target(mesh):
    fm, backend, port = mesh
    resp = raw_exchange(port, b"GET http://world/a/b?c=d#frag HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n")
    assert backend.request_line() == "GET /a/b?c=d#frag HTTP/1.1"
    assert _get(backend.headers(), "host") == ["world"]


def test_absolute_form_with_empty_path_gets_a_slash(mesh):
    fm, backend, port = mesh
    raw_exchange(port, b"GET http://world?x=1 HTTP/1.1\r\n\r\n")
    assert backend.request_line() == "GET /?x=1 HTTP/1.1"
    raw_exchange(port, b"GET http://world HTTP/1.1\r\n\r\n")
    assert backend.request_line() == "GET / HTTP/1.1"


def test_linkerd_destination_headers(mesh):
    fm, backend, port = mesh
    raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\nl5d-dst-service: /forged\r\n\r\n")
    h = backend.headers()
    assert _get(h, "l5d-dst-service") == ["/svc/world"]
    # the client id keeps the name as written (linkerd: `/$/inet/127.1/8080`, spec §7.3);
    # the residual is reported, not applied to the request
    assert _get(h, "l5d-dst-client") == [f"/$/inet/127.1/{backend.port}"]
    assert _get(h, "l5d-dst-residual") == ["/extra/residual"]
    raw_exchange(port, b"GET / HTTP/1.1\r\nHost: other\r\n\r\n")
    assert _get(backend.headers(), "l5d-dst-residual") == []


def test_hop_by_hop_headers_are_dropped_and_connection_named_ones_too(mesh):
    fm, backend, port = mesh
    raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\nConnection: keep-alive, X-Private\r\n"
                       b"X-Private: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: foo\r\n"
                       b"Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
                       b"X-Public: 2\r\nl5d-sample: 1.0\r\n\r\n")
    names = _names(backend.headers())
    for gone in ("connection", "x-private", "keep-alive", "te", "upgrade",
                 "proxy-authorization", "l5d-sample"):
        assert gone not in names, gone
    # not in linkerd's hop-by-hop list, so it passes (spec §6.4)
    assert "proxy-connection" in names
    assert _get(backend.headers(), "x-public") == ["2"]


def test_via_is_appended_on_request_and_response(mesh):
    fm, backend, port = mesh
    resp = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\nVia: 1.1 edge\r\n\r\n")
    assert _get(backend.headers(), "via") == ["1.1 edge, 1.1 linkerd"]
    head = resp.split(b"\r\n\r\n")[0].decode()
    assert "\r\nVia: 1.1 upstream, 1.1 linkerd\r\n" in head
    raw_exchange(port, b"GET / HTTP/1.0\r\nHost: world\r\n\r\n", until_close=True)
    assert _get(backend.headers(), "via") == ["1.0 linkerd"]


def test_response_hop_by_hop_and_success_class(mesh):
    fm, backend, port = mesh
    resp = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\n\r\n")
    head = resp.split(b"\r\n\r\n")[0].decode().lower()
    assert "x-drop-me" not in head and "keep-alive:" not in head
    assert "\r\nx-kept: 1\r\n" in head
    # this router classifies the response itself (2xx = success)
    assert head.count("l5d-success-class") == 1 and "l5d-success-class: 1.0" in head


def test_request_id_and_trace_context(mesh):
    fm, backend, port = mesh
    raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\n\r\n")
    h = backend.headers()
    (reqid,) = _get(h, "l5d-reqid")
    (trace,) = _get(h, "l5d-ctx-trace")
    assert re.fullmatch(r"[0-9a-f]{16}", reqid)
    span, parent, trace_id, flags = struct.unpack(">QQQQ", base64.b64decode(trace))
    # a new trace: the reqid is the trace id, the span is a child of the root
    assert f"{trace_id:016x}" == reqid and span != parent

    incoming = base64.b64encode(struct.pack(">QQQQ", 0x1111, 0x2222, 0xABCDEF, 6))
    raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\nL5d-Ctx-Trace: " + incoming +
                 b"\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n")
    h = backend.headers()
    span, parent, trace_id, flags = struct.unpack(">QQQQ", base64.b64decode(_get(h, "l5d-ctx-trace")[0]))
    assert (parent, trace_id, flags) == (0x1111, 0xABCDEF, 6) and span not in (0x1111, 0x2222)
    assert _get(h, "l5d-reqid") == [f"{0xABCDEF:016x}"]
    assert _get(h, "traceparent") == ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]

    raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\nl5d-reqid: keep-me\r\n\r\n")
    assert _get(backend.headers(), "l5d-reqid") == ["keep-me"]


def test_chunked_request_is_reframed_and_content_length_kept(mesh):
    fm, backend, port = mesh
    resp = raw_exchange(port, b"POST / HTTP/1.1\r\nHost: world\r\nContent-Length: 5\r\n\r\nhello")
    assert resp.startswith(b"HTTP/1.1 200")
    assert backend.requests[-1].endswith(b"\r\n\r\nhello")
    assert _get(backend.headers(), "content-length") == ["5"]


def test_two_host_headers_are_refused(mesh):
    fm, backend, port = mesh
    n = len(backend.requests)
    resp = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: world\r\nHost: other\r\n\r\n", until_close=True)
    assert resp.startswith(b"HTTP/1.1 400 ")
    assert len(backend.requests) == n


def test_clear_context_drops_every_l5d_header():
    backend = CaptureBackend()
    port = free_port()
    try:
        with FastmeshProcess(_config(backend.port, port, clear_context=True)):
            raw_exchange(port, b"GET / HTTP/1.1\r\nHost: other\r\nl5d-dtab: /svc/other=>/$/fail\r\n"
                               b"l5d-ctx-dtab: /svc/other=>/$/fail\r\nl5d-ctx-thing: x\r\n"
                               b"l5d-reqid: forged\r\n\r\n")
            names = _names(backend.headers())
            # the overrides were not applied (the request reached the backend) ...
            assert backend.request_line() == "GET / HTTP/1.1"
            # ... and only this router's own l5d headers go downstream
            assert not {"l5d-dtab", "l5d-ctx-dtab", "l5d-ctx-thing"} & set(names)
            assert _get(backend.headers(), "l5d-reqid") != ["forged"]
    finally:
        backend.close()
