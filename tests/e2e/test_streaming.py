"""Streaming through both hops with bounded memory, and keep-alive reuse across the mesh.

client → node 1 :4140 → TLS → node 2 :4141 → `stream` origin (node 2), which hashes
bodies as they arrive and generates downloads piece by piece. The origin holds the body
back (upload) or the client does not read (download) for a second, so a proxy that
buffered instead of applying backpressure would grow by tens of MB; VmRSS of both
fastmesh processes (parents and workers) is sampled throughout.

Keep-alive: service `ka` crosses nodes through a relay that counts TLS connections, so
"N requests on one client connection use one upstream connection" is counted, not
inferred.
"""

from __future__ import annotations

import time

import pytest

from . import (RssSampler, connect, pattern_chunks, pattern_digest, process_tree,
               read_response)

pytestmark = [pytest.mark.slow, pytest.mark.netns]

MB = 1 << 20
SIZE = 50 * MB
RSS_LIMIT_MB = 25
HOLD_S = 1.0


def _pids(mesh_env) -> list[int]:
    """Both nodes' fastmesh processes: the parent and its workers."""
    return process_tree(mesh_env.proxy_pid(1)) + process_tree(mesh_env.proxy_pid(2))


def _assert_bounded(rss: RssSampler) -> None:
    assert rss.samples > 10, "the RSS sampler did not run"
    growth = rss.growth_mb()
    assert all(g < RSS_LIMIT_MB for g in growth.values()), (
        f"proxy RSS grew by {growth} MB while streaming {SIZE // MB} MB")


def test_chunked_upload_50mb(mesh_env, proxies_alive):
    sock, reader = connect(mesh_env.node(1).ip, 4140, timeout=60)
    with sock, RssSampler(_pids(mesh_env)) as rss:
        sock.sendall(f"POST /upload?hold={HOLD_S} HTTP/1.1\r\nHost: stream\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        for piece in pattern_chunks(SIZE):
            sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        res = read_response(reader)
    assert res.status == 200, res.raw[:500]
    seen = res.json()
    assert seen["origin"] == "stream"
    assert seen["chunked"] is True
    assert seen["body_len"] == SIZE
    assert seen["body_sha256"] == pattern_digest(SIZE)
    _assert_bounded(rss)
    proxies_alive()


def test_content_length_upload_50mb(mesh_env):
    sock, reader = connect(mesh_env.node(1).ip, 4140, timeout=60)
    with sock, RssSampler(_pids(mesh_env)) as rss:
        sock.sendall(f"PUT /upload?hold={HOLD_S} HTTP/1.1\r\nHost: stream\r\n"
                     f"Content-Length: {SIZE}\r\n\r\n".encode())
        for piece in pattern_chunks(SIZE):
            sock.sendall(piece)
        res = read_response(reader)
    assert res.status == 200, res.raw[:500]
    seen = res.json()
    assert seen["chunked"] is False
    assert (seen["body_len"], seen["body_sha256"]) == (SIZE, pattern_digest(SIZE))
    _assert_bounded(rss)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_download_50mb_to_a_slow_reader(mesh_env, proxies_alive, framing):
    query = "?chunked=1" if framing == "chunked" else ""
    sock, reader = connect(mesh_env.node(1).ip, 4140, timeout=60)
    with sock, RssSampler(_pids(mesh_env)) as rss:
        sock.sendall(f"GET /download/{SIZE}{query} HTTP/1.1\r\nHost: stream\r\n\r\n".encode())
        time.sleep(HOLD_S)   # not reading: the origin writes as fast as it is allowed to
        res = read_response(reader, stream=True)
    assert res.status == 200
    assert res.chunked is (framing == "chunked")
    assert res.body_len == SIZE
    assert res.sha256 == pattern_digest(SIZE)
    _assert_bounded(rss)
    # the connection is still good for another request
    sock2, reader2 = connect(mesh_env.node(1).ip, 4140)
    with sock2:
        sock2.sendall(b"GET /after HTTP/1.1\r\nHost: stream\r\n\r\n")
        assert read_response(reader2).status == 200
    proxies_alive()


def test_sequential_requests_share_one_upstream_tls_connection(mesh_env):
    """Service `ka` crosses from node 1 to node 2 through a relay that counts the TLS
    connections between the nodes."""
    relay, origin = mesh_env.ka_relay, mesh_env.ka
    n1 = mesh_env.node(1).ip
    before, origin_before = relay.connections, origin.connections
    n = 25
    sock, reader = connect(n1, 4140)
    conns_seen = []
    with sock:
        for i in range(n):
            sock.sendall(f"GET /ka/{i} HTTP/1.1\r\nHost: ka\r\n\r\n".encode())
            res = read_response(reader)
            assert res.status == 200, res.raw
            seen = res.json()
            assert seen["target"] == f"/ka/{i}"
            conns_seen.append(seen["conn"])
            if i == 0:
                after_first = relay.connections
    # One client connection is served by one worker on each node: at most the first
    # request may open a TLS connection node 1 → node 2 (if it landed on a worker
    # without one pooled); the other n-1 reuse it, and node 2 reuses one connection to
    # the pod.
    assert after_first - before <= 1
    assert relay.connections == after_first, (
        f"{relay.connections - after_first} more TLS connections for {n - 1} requests")
    assert len(set(conns_seen)) == 1, conns_seen
    assert origin.connections - origin_before <= 1
