"""The proxy's error contract and HTTP/1.1 edge cases, through a real `fastmesh run`.

linkerd 1.x behaviour (spec §7, §6.6, §2.4): no route → 502 + `l5d-err`; unidentifiable →
400; a bad `l5d-dtab` → 400 with the parse error; a malformed request → 400 and the
connection closes; too-large headers → 431 and a too-long request line → 414 (both
close); a failed connection → 502 naming the endpoint (fastmesh adds the reason); `Via`
deeper than `maxCallDepth` → 400. Error answers to complete requests keep the connection.
Upstream trouble after the response began must reach the client as a broken response.

The origin is ours (scripted misbehaviour by path); the proxy is a child process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import time

import pytest

from e2e import (BackgroundLoop, FastmeshProcess, HttpOrigin, IncompleteMessage, connect,
                 exchange, free_port, listen_socket, pattern_chunks, read_response,
                 refusing_port)
from fastmesh.naming import Dtab, ParseError

MAX_CALL_DEPTH = 3


async def _cut_mid_response(origin, req, reader, writer) -> bool:
    """Announce a body, send part of it, then drop the connection."""
    if req.path.endswith("/chunked"):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"400\r\n" + b"x" * 1024 + b"\r\n")
    else:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()
    return False


async def _never_answer(origin, req, reader, writer) -> bool:
    """Read on until the proxy gives the connection up; count that."""
    origin.counters["hung"] += 1
    while await reader.read(65536):
        pass
    origin.counters["hang_released"] += 1
    return False


async def _head(origin, req, reader, writer) -> bool:
    # A HEAD answer announces the length of the body a GET would get, and has none.
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n")
    await writer.drain()
    return True


async def _status(origin, req, reader, writer) -> bool:
    code = req.path.rsplit("/", 1)[1]
    if code == "204":
        writer.write(b"HTTP/1.1 204 No Content\r\nX-Status: 204\r\n\r\n")
    else:  # 304 may carry the Content-Length of the representation it stands for
        writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 42\r\n\r\n')
    await writer.drain()
    return True


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """(ip, port, deep_port, origin, refused_port): `deep_port` has maxCallDepth 3."""
    work = tmp_path_factory.mktemp("errors")
    loop = BackgroundLoop()
    origin = loop.run(HttpOrigin("ok", handlers={
        "/cut/": _cut_mid_response, "/hang": _never_answer, "/head": _head,
        "/status/": _status}).start(listen_socket("127.0.0.1")))
    refuser, refused_port = refusing_port()
    port, deep_port = free_port(), free_port()
    fm = FastmeshProcess(f"""\
admin:
  ip: 127.0.0.1
  port: {free_port()}
routers:
- protocol: http
  label: edge
  dtab: |
    /svc/ok      => /$/inet/127.0.0.1/{origin.port};
    /svc/refused => /$/inet/127.0.0.1/{refused_port};
  servers:
  - ip: 127.0.0.1
    port: {port}
  - ip: 127.0.0.1
    port: {deep_port}
    maxCallDepth: {MAX_CALL_DEPTH}
""", work, "errors")
    try:
        fm.start([("127.0.0.1", port), ("127.0.0.1", deep_port)])
        yield "127.0.0.1", port, deep_port, origin, refused_port
        assert fm.alive(), "fastmesh died during the error tests"
    finally:
        fm.stop()
        refuser.close()
        loop.close()


def _get(host: str, path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def _assert_closes(reader, what: str) -> None:
    assert reader.at_eof(3.0), f"connection still open after {what}"


# ---- routing errors ------------------------------------------------------------------


def test_no_route_is_502_with_l5d_err(proxy):
    ip, port, *_ = proxy
    res = exchange(ip, port, _get("nowhere"))
    assert res.status == 502
    assert res.header("l5d-err").startswith("Unable+to+route+request%21"), res.raw
    assert res.body.startswith(b"Unable to route request!\n\nservice name: /svc/nowhere\n")
    assert res.l5d_err == res.body.decode()
    assert res.header("content-type").startswith("text/plain")
    # linkerd-generated: no Via / success class (spec §7.1)
    assert res.header("via") is None and res.header("l5d-success-class") is None


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
], ids=["no-host", "empty-host"])
def test_unidentifiable_request_is_400(proxy, request_bytes):
    ip, port, *_ = proxy
    res = exchange(ip, port, request_bytes)
    assert res.status == 400, res.raw
    assert res.l5d_err.startswith("Unknown destination:"), res.l5d_err
    assert "Host" in res.l5d_err or "host" in res.l5d_err


def test_invalid_l5d_dtab_is_400_with_the_parse_error(proxy):
    ip, port, _, origin, _ = proxy
    bad = "/svc=>>/nope"
    with pytest.raises(ParseError) as parse_error:
        Dtab.read(bad)
    heads = origin.heads
    res = exchange(ip, port, _get("ok", extra=f"l5d-dtab: {bad}\r\n"))
    assert res.status == 400, res.raw
    assert res.l5d_err == str(parse_error.value) == res.body.decode()
    assert origin.heads == heads   # never forwarded


def test_upstream_refused_is_502_naming_connection_refused(proxy):
    ip, port, _, _, refused_port = proxy
    res = exchange(ip, port, _get("refused", "/x"))
    assert res.status == 502, res.raw
    err = res.l5d_err
    assert err.startswith(f"Unable to establish connection to 127.0.0.1:{refused_port}.\n"), err
    assert "service name: /svc/refused\n" in err
    assert f"client name: /$/inet/127.0.0.1/{refused_port}\n" in err
    assert "connection refused" in err.lower()


# ---- malformed requests and limits ---------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: ok\r\nThis is not a header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: ok\r\nBad(Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: ok\r\nContent-Length: ten\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: ok\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET / HTTTP/1.1\r\nHost: ok\r\n\r\n",
    b"POST /chunky HTTP/1.1\r\nHost: ok\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
], ids=["no-colon", "bad-name-char", "bad-content-length", "conflicting-lengths",
        "bad-version", "bad-chunk-size"])
def test_malformed_request_is_400_and_closes(proxy, request_bytes):
    ip, port, *_ = proxy
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(request_bytes)
        res = read_response(reader)
        assert res.status == 400, res.raw
        assert res.header("l5d-err"), res.raw
        _assert_closes(reader, "a 400 for a malformed request")


def test_oversized_headers_are_431_and_close(proxy):
    ip, port, *_ = proxy
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(_get("ok", extra=f"X-Big: {'a' * 9000}\r\n"))
        res = read_response(reader)
        assert res.status == 431, res.raw[:300]
        _assert_closes(reader, "a 431")
    # many small headers adding up past maxHeadersKB (8) count too
    many = "".join(f"X-H{i}: {'b' * 90}\r\n" for i in range(100))
    res = exchange(ip, port, _get("ok", extra=many))
    assert res.status == 431, res.raw[:300]


def test_too_long_request_line_is_414_and_closes(proxy):
    ip, port, *_ = proxy
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(_get("ok", "/" + "a" * 5000))
        res = read_response(reader)
        assert res.status == 414, res.raw[:300]
        _assert_closes(reader, "a 414")
    # just below the limit (4 KB request line) is fine
    res = exchange(ip, port, _get("ok", "/" + "a" * 3900))
    assert res.status == 200, res.raw[:300]


def test_via_deeper_than_max_call_depth_is_400(proxy):
    ip, _, deep_port, origin, _ = proxy
    heads = origin.heads
    res = exchange(ip, deep_port, _get("ok", extra="Via: 1.1 a, 1.1 b, 1.1 c, 1.1 d\r\n"))
    assert res.status == 400, res.raw
    expected = (f"Maximum number of calls ({MAX_CALL_DEPTH}) has been exceeded. "
                "Please check for proxy loops.")
    assert res.l5d_err == expected
    assert res.body.decode().strip() == expected
    assert origin.heads == heads
    # exactly maxCallDepth hops pass, and this proxy appends itself
    res = exchange(ip, deep_port, _get("ok", extra="Via: 1.1 a, 1.1 b, 1.1 c\r\n"))
    assert res.status == 200, res.raw
    seen = dict((k.lower(), v) for k, v in res.json()["headers"])
    assert seen["via"] == "1.1 a, 1.1 b, 1.1 c, 1.1 linkerd"


# ---- upstream trouble ----------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upstream_closing_mid_response_aborts_the_client(proxy, framing):
    ip, port, *_ = proxy
    path = "/cut/chunked" if framing == "chunked" else "/cut/cl"
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(_get("ok", path))
        t0 = time.monotonic()
        try:
            res = read_response(reader)
        except (socket.timeout, TimeoutError):
            pytest.fail(f"the client hung {time.monotonic() - t0:.1f}s after the upstream closed")
        except IncompleteMessage as exc:
            # the head and part of the body arrived, then the connection ended
            assert exc.raw.startswith(b"HTTP/1.1 200 OK\r\n"), exc.raw[:200]
            assert b"x" * 100 in exc.raw
        else:
            pytest.fail(f"a cut-off response was presented as complete: {res.raw[:200]!r}")


def test_upstream_that_never_answers(proxy):
    """linkerd has no default request timeout, so neither does fastmesh: the client
    waits. Bounded here: after 1.5 s we give up. Whatever fastmesh does must not block
    other requests, and when the client leaves, the upstream connection must go too."""
    ip, port, _, origin, _ = proxy
    released = origin.counters["hang_released"]
    sock, reader = connect(ip, port, timeout=1.5)
    with sock:
        sock.sendall(_get("ok", "/hang"))
        outcome = None
        try:
            res = read_response(reader)
            outcome = res
        except (socket.timeout, TimeoutError):
            pass
        # an answer, if any, must be a linkerd-style timeout error, not a made-up success
        if outcome is not None:
            assert outcome.status in (502, 503, 504) and outcome.header("l5d-err"), outcome.raw
        # meanwhile other requests are served
        assert exchange(ip, port, _get("ok", "/meanwhile"), timeout=5).status == 200
    deadline = time.monotonic() + 5
    while origin.counters["hang_released"] == released:
        assert time.monotonic() < deadline, (
            "the client left but fastmesh kept the upstream connection of its request open")
        time.sleep(0.02)


# ---- HTTP/1.1 edge cases ---------------------------------------------------------------


def test_head_response_with_content_length_keeps_the_connection_usable(proxy):
    ip, port, *_ = proxy
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(b"HEAD /head HTTP/1.1\r\nHost: ok\r\n\r\n")
        res = read_response(reader, method="HEAD")
        assert res.status == 200
        assert res.header("content-length") == "1234"
        assert res.header("transfer-encoding") is None
        sock.sendall(_get("ok", "/after-head"))
        res = read_response(reader)
        assert res.status == 200, res.raw[:300]
        assert res.json()["target"] == "/after-head"


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_statuses_keep_the_connection_usable(proxy, code):
    ip, port, *_ = proxy
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        for i in range(2):
            sock.sendall(_get("ok", f"/status/{code}"))
            res = read_response(reader)
            assert res.status == code, res.raw
            assert res.body == b""
            assert res.header("transfer-encoding") is None
            if code == 304:
                assert res.header("etag") == '"v1"'
                assert res.header("content-length") == "42"
        sock.sendall(_get("ok", "/after"))
        res = read_response(reader)
        assert res.status == 200 and res.json()["target"] == "/after"


def test_expect_100_continue_upload(proxy):
    ip, port, *_ = proxy
    size = 300_000
    body = b"".join(pattern_chunks(size))
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: ok\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        interim = reader.readuntil(b"\r\n\r\n")   # bounded by the socket timeout
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        sock.sendall(body)
        res = read_response(reader)
    assert res.status == 200, res.raw[:300]
    seen = res.json()
    assert seen["body_len"] == size
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_expect_100_continue_with_curl(proxy, tmp_path):
    ip, port, *_ = proxy
    data = tmp_path / "upload.bin"
    data.write_bytes(b"".join(pattern_chunks(2_000_000)))
    t0 = time.monotonic()
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Host: ok",
                          "-H", "Expect: 100-continue", "--data-binary", f"@{data}",
                          f"http://{ip}:{port}/curl-upload"],
                         capture_output=True, timeout=20)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    assert seen["body_len"] == 2_000_000
    assert seen["body_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    # curl waits up to 1 s for `100 Continue`; getting it through the proxy is faster
    assert time.monotonic() - t0 < 0.9


def test_pipelined_requests_get_in_order_responses(proxy):
    ip, port, *_ = proxy
    reqs = [_get("ok", f"/pipe/{i}") for i in range(3)]
    reqs.insert(2, b"POST /pipe/post HTTP/1.1\r\nHost: ok\r\nContent-Length: 5\r\n\r\nhello")
    reqs.append(b"HEAD /head HTTP/1.1\r\nHost: ok\r\n\r\n")
    reqs.append(_get("ok", "/pipe/last"))
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(b"".join(reqs))   # one write: the proxy reads them together
        targets = []
        for req in reqs:
            method = req.split(b" ", 1)[0].decode()
            res = read_response(reader, method=method)
            assert res.status == 200, res.raw[:300]
            targets.append(res.json()["target"] if method != "HEAD" else "HEAD")
    assert targets == ["/pipe/0", "/pipe/1", "/pipe/post", "/pipe/2", "HEAD", "/pipe/last"]


@pytest.mark.parametrize("host", ["nowhere", "refused"])
def test_keep_alive_after_an_error_response(proxy, host):
    """A 502 answering a complete GET does not close the connection (no Connection:
    close, the next request on it is served)."""
    ip, port, *_ = proxy
    sock, reader = connect(ip, port, timeout=5)
    with sock:
        sock.sendall(_get(host))
        res = read_response(reader)
        assert res.status == 502
        assert (res.header("connection") or "").lower() != "close"
        sock.sendall(_get("ok", "/after-error"))
        try:
            res = read_response(reader)
        except IncompleteMessage:
            pytest.fail(f"fastmesh closed the connection after a 502 for {host} "
                        "without saying Connection: close")
        assert res.status == 200 and res.json()["target"] == "/after-error"
