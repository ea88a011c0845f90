"""A peer whose certificate comes from another CA is refused before any request crosses.

Node 3 runs the same fastmesh config as the others, but its `linkerd` certificate is
issued by a CA the mesh does not trust. Discovery lists node 3 as the home of `rogue`.
"""

from __future__ import annotations

import pytest

from . import exchange

pytestmark = [pytest.mark.slow, pytest.mark.netns]

REQUEST = (b"POST /rogue/secret HTTP/1.1\r\nHost: rogue\r\nX-Must-Not-Arrive: 1\r\n"
           b"Content-Length: 11\r\n\r\nhello rogue")


def test_peer_with_foreign_ca_is_refused(mesh_env, proxies_alive):
    n1, n3 = mesh_env.node(1).ip, mesh_env.node(3).ip
    rogue = mesh_env.rogue
    before = (rogue.connections, rogue.heads)
    res = exchange(n1, 4140, REQUEST)
    assert res.status == 502, res.raw
    err = res.l5d_err
    assert err.startswith(f"Unable to establish connection to {n3}:4141."), err
    assert "service name: /svc/rogue" in err
    assert "TLS certificate verification failed" in err, err
    assert "unable to get local issuer certificate" in err, err   # OpenSSL's wording
    assert res.body.decode() == err
    assert res.header("via") is None
    # nothing of the request reached node 3's pod
    assert (rogue.connections, rogue.heads) == before
    proxies_alive()


def test_the_rogue_peer_itself_works(mesh_env):
    """Control: node 3's own outgoing router trusts node 3's CA, so the same request sent
    there does reach the rogue pod — the refusal above was the CA, not a dead peer."""
    n3 = mesh_env.node(3).ip
    rogue = mesh_env.rogue
    before = rogue.heads
    res = exchange(n3, 4140, REQUEST)
    assert res.status == 200, res.raw
    seen = res.json()
    assert seen["origin"] == "rogue" and seen["target"] == "/rogue/secret"
    assert rogue.heads == before + 1


def test_every_later_attempt_is_refused_too(mesh_env):
    """Nothing learnt from the first failure lets a later request through."""
    n1 = mesh_env.node(1).ip
    before = mesh_env.rogue.heads
    for _ in range(3):
        res = exchange(n1, 4140, REQUEST)
        assert res.status == 502, res.raw
    assert mesh_env.rogue.heads == before
