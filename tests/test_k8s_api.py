"""The Kubernetes API client's HTTP and watch framing (fastmesh/namers/k8s_api.py).

The JSON document splitter is fed every way a chunked watch body can be cut; the client
itself talks to raw loopback servers that write exact bytes (chunk boundaries inside a
document, inside a chunk-size line, a stream cut mid-chunk, a Status body, silence).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from k8s_harness import run

from fastmesh.namers.k8s_api import STOP, ApiError, JsonDocuments, K8sApiClient, api_path

EVENTS = [
    {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "1"}}},
    {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "2"},
                                    "note": "brace } and newline \n inside a string"}},
    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3", "creationTimestamp": None}}},
    {"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "4"}, "x": "é"}},
]
WIRE = b"".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                for e in EVENTS)


def decode_all(pieces: list[bytes]) -> list:
    out = []
    d = JsonDocuments(out.append)
    for p in pieces:
        d.feed(p)
    d.finish()
    return out


def test_every_two_way_split_gives_the_same_documents():
    for cut in range(len(WIRE) + 1):
        assert decode_all([WIRE[:cut], WIRE[cut:]]) == EVENTS, cut


def test_byte_by_byte_and_all_in_one():
    assert decode_all([WIRE[i:i + 1] for i in range(len(WIRE))]) == EVENTS
    assert decode_all([WIRE]) == EVENTS


def test_concatenated_documents_and_a_last_one_without_newline():
    line = b"".join(json.dumps(e).encode() for e in EVENTS[:2]) + b"\n"
    assert decode_all([line, json.dumps(EVENTS[2]).encode()]) == EVENTS[:3]
    assert decode_all([b"\n\r\n  \n"]) == []  # blank lines are nothing


def test_malformed_oversize_and_stop():
    with pytest.raises(ApiError, match="malformed watch document"):
        decode_all([b'{"type": "ADDED", "object": {]}\n'])
    with pytest.raises(ApiError, match="larger than 64 bytes"):
        JsonDocuments(lambda d: None, max_bytes=64).feed(b"{" + b" " * 100)
    seen = []
    d = JsonDocuments(lambda doc: (seen.append(doc), STOP)[1])
    d.feed(WIRE)
    assert seen == EVENTS[:1] and d.stopped
    assert api_path("/x", {"labelSelector": "app=l5d", "a": "b c"}) == "/x?labelSelector=app%3Dl5d&a=b%20c"


# --- against raw servers --------------------------------------------------------------------------


async def raw_server(script):
    """A loopback server whose connection handler is ``script(reader, writer)``."""
    async def handler(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_watch_chunk_boundaries_anywhere():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    # chunks cut mid-document, one chunk holding two documents, and the bytes of the
    # chunked framing itself written in pieces with pauses between them
    body = chunk(WIRE[:17]) + chunk(WIRE[17:200]) + chunk(WIRE[200:]) + b"0\r\n\r\n"

    async def script(reader, writer):
        data = head + body
        for i in range(0, len(data), 23):
            writer.write(data[i:i + 23])
            await writer.drain()
            await asyncio.sleep(0.001)

    async def body_():
        server, port = await raw_server(script)
        seen = []
        end = await K8sApiClient("127.0.0.1", port).watch("/w", {}, seen.append, timeout_s=5)
        server.close()
        assert seen == EVENTS
        assert (end.status, end.events, end.stopped) == (200, 4, False)
        assert end.headers["content-type"] == "application/json"

    run(body_)


def test_watch_cut_mid_chunk_is_an_error_and_status_bodies_are_returned():
    async def cut(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(WIRE[:30])[:-5])
        await writer.drain()

    status = {"kind": "Status", "code": 403, "message": "forbidden"}
    raw = json.dumps(status).encode()

    async def forbidden(reader, writer):
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        await writer.drain()

    async def body():
        server, port = await raw_server(cut)
        with pytest.raises(ApiError, match="closed before the response ended"):
            await K8sApiClient("127.0.0.1", port).watch("/w", {}, lambda d: None, timeout_s=5)
        server.close()
        server, port = await raw_server(forbidden)
        end = await K8sApiClient("127.0.0.1", port).watch("/w", {}, lambda d: None, timeout_s=5)
        assert end.status == 403 and json.loads(end.body) == status and end.events == 0
        resp = await K8sApiClient("127.0.0.1", port).get("/x")
        assert resp.status == 403 and resp.json() == status
        server.close()

    run(body)


def test_refused_and_silent_servers_are_bounded_errors():
    async def silent(reader, writer):
        await asyncio.sleep(10)

    async def body():
        server, port = await raw_server(silent)
        client = K8sApiClient("127.0.0.1", port, get_timeout_s=0.2)
        with pytest.raises(ApiError, match="timed out after 0.2s"):
            await client.get("/x")
        with pytest.raises(ApiError, match="no answer within 0.2s"):
            await client.watch("/w", {}, lambda d: None, timeout_s=0.2)
        server.close()
        await server.wait_closed()
        with pytest.raises(ApiError, match="cannot connect to 127.0.0.1"):
            await K8sApiClient("127.0.0.1", port).get("/x")

    run(body)


def test_request_head_is_what_kubectl_proxy_expects():
    seen = {}

    async def capture(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nWarning: 299 - \"x\"\r\n\r\n{}")
        await writer.drain()

    async def body():
        async def handler(reader, writer):
            seen["head"] = await reader.readuntil(b"\r\n\r\n")
            await capture(reader, writer)
            writer.close()
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        resp = await K8sApiClient("127.0.0.1", port).get("/api/v1/namespaces/default/endpoints/l5d",
                                                         {"labelSelector": "version=v1"})
        server.close()
        assert resp.status == 200 and resp.json() == {} and resp.headers["warning"] == '299 - "x"'
        lines = seen["head"].decode().split("\r\n")
        assert lines[0] == "GET /api/v1/namespaces/default/endpoints/l5d?labelSelector=version%3Dv1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{port}" in lines and "Accept: application/json" in lines

    run(body)
