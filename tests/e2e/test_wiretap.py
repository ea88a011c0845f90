"""A wiretap on the mesh link: nothing of the request crosses nodes in plaintext.

A plain TCP relay of ours sits between node 1's outgoing router and node 2's incoming
router (:4141): node 1's discovery entry for `world` is pointed at the relay, which
forwards to node 2 and records every byte both ways. The recordings must be TLS records
only, the ClientHello must ask for `linkerd`, and a relay that swaps node 2 for a server
whose certificate (from the mesh CA!) names someone else must make the request fail with
502 + l5d-err — so the name is verified, not just the CA.
"""

from __future__ import annotations

import re
import time

import pytest

from fastmesh.certs import issue_cert

from . import (TLS_APPLICATION_DATA, TLS_HANDSHAKE, TcpRelay, TlsImpostor, client_hello_sni,
               exchange, listen_socket, tls_records)

pytestmark = [pytest.mark.slow, pytest.mark.netns]

SECRET_PATH = "/wiretap/secret-path-7f3a"
SECRET_HEADER = "X-Wiretap-Secret"
SECRET_VALUE = "s3cr3t-value-91c2"
HELLO_RE = r"Hello \([0-9.]+\) world \([0-9.]+\)!!"


@pytest.fixture(scope="module")
def tap(mesh_env):
    """The relay, with `mesh/world` pointing at it (restored afterwards)."""
    n2 = mesh_env.node(2)
    relay = mesh_env.loop.run(TcpRelay((n2.ip, 4141)).start(listen_socket(mesh_env.root_ip)))
    world_file = mesh_env.mesh_dir / "world"
    original = world_file.read_text()
    world_file.write_text(f"{relay.address[0]} {relay.address[1]}\n")
    try:
        # The fs namer polls every ~250 ms; wait (bounded) until hello's call to world
        # takes the relay.
        deadline = time.monotonic() + 10
        while relay.connections == 0:
            assert time.monotonic() < deadline, "node 1 never routed world through the relay"
            res = mesh_env.curl(2, ["http://hello/"], proxy_node=2)
            assert res.returncode == 0, res.stderr
            time.sleep(0.1)
        # Each fastmesh worker polls on its own: give the others a few poll intervals.
        time.sleep(1.0)
        yield relay
    finally:
        world_file.write_text(original)
        mesh_env.loop.run(relay.stop())


@pytest.fixture(scope="module")
def tapped_traffic(mesh_env, tap):
    """Traffic that crossed the tap: hello → world, and a request with secrets in its
    path, headers and body sent on node 1 straight to world."""
    def relayed() -> tuple[int, int]:
        return (sum(len(r.to_server) for r in tap.records),
                sum(len(r.to_client) for r in tap.records))

    before = relayed()
    hello = mesh_env.curl(2, ["http://hello/"], proxy_node=2)
    middle = relayed()
    secret = mesh_env.curl(1, ["-i", "-H", f"{SECRET_HEADER}: {SECRET_VALUE}",
                               "--data-binary", "Hello world, the body is secret too",
                               f"http://world{SECRET_PATH}"], proxy_node=1)
    after = relayed()
    for res in (hello, secret):
        assert res.returncode == 0, res.stderr
    # both exchanges crossed the tap, both ways (TLS adds to the plaintext sizes)
    assert middle[0] - before[0] > len("GET / HTTP/1.1\r\nHost: world\r\n\r\n")
    assert middle[1] - before[1] > len("world (10.0.0.1)!")
    assert after[0] - middle[0] > len(SECRET_PATH) + len(SECRET_HEADER) + len(SECRET_VALUE)
    assert after[1] - middle[1] > len("world (10.0.0.1)!")
    assert re.fullmatch(HELLO_RE, hello.stdout.decode().strip()), hello.stdout
    assert b" 200 " in secret.stdout.split(b"\r\n", 1)[0], secret.stdout
    assert secret.stdout.rstrip().endswith(b"!"), secret.stdout
    return tap


def test_no_plaintext_on_the_mesh_link(tapped_traffic):
    to_server = b"".join(bytes(r.to_server) for r in tapped_traffic.records)
    to_client = b"".join(bytes(r.to_client) for r in tapped_traffic.records)
    # the requests and answers above did cross the tap (sizes only, no content)
    assert len(to_server) > 200 and len(to_client) > 200
    # (not bare "http/1.1": that is the ALPN protocol name, cleartext in every ClientHello)
    markers = [SECRET_PATH, SECRET_HEADER, SECRET_VALUE, "Hello", "world", "the body is secret",
               "HTTP/1.1\r\n", "HTTP/1.1 200", "l5d-dst", "l5d-reqid", "linkerd, ",
               "Content-Length", "Host:"]
    for direction, data in (("node1→node2", to_server), ("node2→node1", to_client)):
        low = data.lower()
        for marker in markers:
            assert marker.lower().encode() not in low, f"{marker!r} in plaintext {direction}"


def test_recordings_are_tls_records(tapped_traffic):
    assert any(rec.to_server for rec in tapped_traffic.records)
    for n, rec in enumerate(tapped_traffic.records):
        if not rec.to_server:
            continue
        up = tls_records(rec.to_server)      # raises unless the stream is exactly records
        down = tls_records(rec.to_client)
        assert up[0].content_type == TLS_HANDSHAKE and up[0].payload[0] == 1, "no ClientHello"
        assert down[0].content_type == TLS_HANDSHAKE and down[0].payload[0] == 2, "no ServerHello"
        # record-layer version: 0x0303 everywhere; OpenSSL may send the very first
        # ClientHello record as 0x0301 (allowed by RFC 8446 §5.1)
        assert up[0].version in (0x0301, 0x0303)
        assert all(r.version == 0x0303 for r in up[1:] + down), f"connection {n}"
        assert {r.content_type for r in up + down} <= {20, 21, 22, 23}
        assert any(r.content_type == TLS_APPLICATION_DATA for r in up)
        assert any(r.content_type == TLS_APPLICATION_DATA for r in down)


def test_client_hello_asks_for_linkerd(tapped_traffic):
    hellos = [client_hello_sni(tls_records(r.to_server)) for r in tapped_traffic.records
              if r.to_server]
    assert hellos and all(sni == "linkerd" for sni in hellos), hellos


def test_server_name_is_verified(mesh_env, tap, tmp_path):
    """The relay now leads to a TLS server whose certificate is signed by the mesh CA but
    names `impostor`: the handshake must fail the name check → 502 + l5d-err, and not a
    byte of HTTP reaches the impostor."""
    cert, key = issue_cert(mesh_env.certs.ca_cert, mesh_env.certs.ca_key, "impostor",
                           tmp_path / "impostor.pem", tmp_path / "impostor.pk8")
    impostor = mesh_env.loop.run(TlsImpostor(cert, key).start(listen_socket(mesh_env.root_ip)))
    real_target = tap.target
    n1 = mesh_env.node(1).ip
    try:
        tap.target = impostor.address
        mesh_env.loop.call(tap.drop_all)   # pooled connections to node 2 must go
        time.sleep(0.3)
        res = exchange(n1, 4140, b"GET /impostor-path HTTP/1.1\r\nHost: world\r\n\r\n")
        assert res.status == 502, res.raw
        err = res.l5d_err
        assert err.startswith(f"Unable to establish connection to {tap.address[0]}:"
                              f"{tap.address[1]}."), err
        assert re.search(r"TLS certificate verification failed", err), err
        assert re.search(r"hostname|linkerd", err, re.I), err
        assert res.body.decode() == err
        assert res.header("via") is None    # fastmesh's own answer, not a relayed one
        assert impostor.sni and set(impostor.sni) == {"linkerd"}, impostor.sni
        assert impostor.handshakes_ok == 0 and impostor.received == b""
    finally:
        tap.target = real_target
        mesh_env.loop.run(impostor.stop())
    # and with the real node 2 behind the relay again, the same request goes through
    deadline = time.monotonic() + 10
    while True:
        res = exchange(n1, 4140, b"GET / HTTP/1.1\r\nHost: world\r\n\r\n")
        if res.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)   # the failed endpoint is briefly kept out of the balancer
    assert res.status == 200, res.raw
    assert res.body.startswith(b"world ("), res.body
