"""Message parsing does not depend on how the bytes arrive.

A real `fastmesh run` proxies to a capture origin of ours. Each request is sent whole,
in two pieces split at every offset (with a pause, so the proxy reads them separately)
and byte by byte; what the origin receives must be the same bytes every time. The same
for responses: the origin answers in two pieces split at every offset (and byte by
byte) and the client must receive the same bytes every time.

Normalised, because they legitimately differ: `l5d-reqid` and `l5d-ctx-trace` (random per
request; their format is checked), and the chunk boundaries of a chunked body (framing
is hop-by-hop and the proxy re-chunks what it read; the payload and the trailer section
must be identical).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time

import pytest

from e2e import (BackgroundLoop, FastmeshProcess, HttpOrigin, connect, dechunk, free_port,
                 listen_socket, parse_head, read_response)

PAUSE_S = 0.001

REQUESTS = {
    "content-length": (
        b"POST /upload/path?q=1&r=two HTTP/1.1\r\n"
        b"Host: capture\r\n"
        b"User-Agent: split-test/1.0\r\n"
        b"X-Multi: first\r\n"
        b"X-Multi: second\r\n"
        b"Accept: */*\r\n"
        b"l5d-ctx-custom: carried\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: 36\r\n"
        b"\r\n"
        b"abcdefghijklmnopqrstuvwxyz0123456789"),
    "chunked": (
        b"PUT /chunks HTTP/1.1\r\n"
        b"Host: capture\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"X-After-Framing: yes\r\n"
        b"\r\n"
        b"5\r\nhello\r\n"
        b"7;ext=1\r\n, world\r\n"
        b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n"
        b"0\r\n\r\n"),
    "absolute-form": (
        b"GET http://capture/abs/path?x=1 HTTP/1.1\r\n"
        b"Host: capture\r\n"
        b"Accept: text/plain\r\n"
        b"\r\n"),
}

RESPONSES = {
    "content-length": (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"X-Resp: one\r\n"
        b"X-Resp: two\r\n"
        b"Content-Length: 36\r\n"
        b"\r\n"
        b"abcdefghijklmnopqrstuvwxyz0123456789"),
    "chunked": (
        b"HTTP/1.1 201 Created\r\n"
        b"Content-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"\r\n"
        b"5\r\nhello\r\n"
        b"7\r\n, world\r\n"
        b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n"
        b"0\r\n\r\n"),
}


async def _answer_split(origin, req, reader, writer) -> bool:
    """`/resp/<variant>/<how>`: how = whole | bytewise | <offset> (two pieces)."""
    _, _, variant, how = req.path.split("/")
    data = RESPONSES[variant]
    if how == "whole":
        pieces = [data]
    elif how == "bytewise":
        pieces = [data[i:i + 1] for i in range(len(data))]
    else:
        k = int(how)
        pieces = [data[:k], data[k:]]
    for i, piece in enumerate(pieces):
        if i:
            await asyncio.sleep(PAUSE_S)
        writer.write(piece)
        await writer.drain()
    return True


@pytest.fixture(scope="module")
def split_proxy(tmp_path_factory):
    work = tmp_path_factory.mktemp("split")
    loop = BackgroundLoop()
    origin = loop.run(HttpOrigin("capture", capture_raw=True,
                                 handlers={"/resp/": _answer_split})
                      .start(listen_socket("127.0.0.1")))
    port = free_port()
    proxy = FastmeshProcess(f"""\
admin:
  ip: 127.0.0.1
  port: {free_port()}
routers:
- protocol: http
  label: split
  dtab: /svc/capture => /$/inet/127.0.0.1/{origin.port};
  servers:
  - ip: 127.0.0.1
    port: {port}
""", work)
    try:
        proxy.start([("127.0.0.1", port)])
        yield port, origin
    finally:
        proxy.stop()
        loop.close()


def _normalise_request(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = []
    chunked = False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        lname = name.lower()
        if lname == b"l5d-reqid":
            assert re.fullmatch(rb"[0-9a-f]{16}", value), line
            line = b"l5d-reqid: <random>"
        elif lname == b"l5d-ctx-trace":
            assert len(base64.b64decode(value, validate=True)) in (32, 40), line
            line = b"l5d-ctx-trace: <random>"
        elif lname == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
        lines.append(line)
    if chunked:
        payload, trailers = dechunk(body)
        body = b"<chunked>" + payload + b"<trailers>" + trailers
    return b"\r\n".join(lines) + sep + body


def _normalise_response(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    _, headers = parse_head(head + sep)
    if any(k.lower() == "transfer-encoding" for k, _ in headers):
        payload, trailers = dechunk(body)
        body = b"<chunked>" + payload + b"<trailers>" + trailers
    return head + sep + body


def _send_request(sock, reader, origin, pieces: list[bytes], method: str) -> bytes:
    for i, piece in enumerate(pieces):
        if i:
            time.sleep(PAUSE_S)
        sock.sendall(piece)
    res = read_response(reader, method=method)
    assert res.status == 200, res.raw
    return _normalise_request(origin.requests[-1].raw)


@pytest.mark.parametrize("variant", sorted(REQUESTS))
def test_request_split_anywhere_forwards_the_same_bytes(split_proxy, variant):
    port, origin = split_proxy
    data = REQUESTS[variant]
    method = data.split(b" ", 1)[0].decode()
    sock, reader = connect("127.0.0.1", port, timeout=5)
    with sock:
        whole = _send_request(sock, reader, origin, [data], method)
        # sanity: the forwarded request is the one we sent, as a proxy rewrites it
        assert b"\r\nVia: 1.1 linkerd\r\n" in whole
        assert b"\r\nl5d-dst-service: /svc/capture\r\n" in whole
        for k in range(1, len(data)):
            got = _send_request(sock, reader, origin, [data[:k], data[k:]], method)
            assert got == whole, f"split at {k} ({data[:k][-20:]!r} | {data[k:][:20]!r})"
        got = _send_request(sock, reader, origin, [data[i:i + 1] for i in range(len(data))],
                            method)
        assert got == whole, "byte by byte"
    if variant == "chunked":
        assert whole.endswith(b"<chunked>hello, worldabcdefghijklmnopqrstuvwxyz<trailers>\r\n")
    if variant == "absolute-form":
        assert whole.startswith(b"GET /abs/path?x=1 HTTP/1.1\r\nHost: capture\r\n")


@pytest.mark.parametrize("variant", sorted(RESPONSES))
def test_response_split_anywhere_reaches_the_client_the_same(split_proxy, variant):
    port, origin = split_proxy
    data = RESPONSES[variant]
    sock, reader = connect("127.0.0.1", port, timeout=5)

    def fetch(how: str) -> bytes:
        sock.sendall(f"GET /resp/{variant}/{how} HTTP/1.1\r\nHost: capture\r\n\r\n".encode())
        return _normalise_response(read_response(reader).raw)

    with sock:
        whole = fetch("whole")
        status_line = data.split(b"\r\n", 1)[0]
        assert whole.startswith(status_line + b"\r\n")
        assert b"\r\nVia: 1.1 linkerd\r\n" in whole
        for k in range(1, len(data)):
            got = fetch(str(k))
            assert got == whole, f"split at {k} ({data[:k][-20:]!r} | {data[k:][:20]!r})"
        assert fetch("bytewise") == whole, "byte by byte"
