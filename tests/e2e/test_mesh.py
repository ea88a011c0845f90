"""End to end through two nodes: app → outgoing router → TLS → incoming router → pod.

Real curl (http_proxy from the environment, as apps use it), real fastmesh processes,
real TLS with freshly made mesh certificates; network namespaces when root, loopback
addresses otherwise (the same assertions hold in both modes).
"""

from __future__ import annotations

import json
import re

import pytest

from . import header, parse_head

pytestmark = [pytest.mark.slow, pytest.mark.netns]


def split_curl_i(stdout: bytes) -> tuple[int, list[tuple[str, str]], str]:
    """curl -i output → (final status, headers, body); skips 1xx heads."""
    data = stdout
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"no response head in curl output: {stdout!r}"
        start, headers = parse_head(head + sep)
        status = int(start.split()[1])
        data = rest
        if not 100 <= status < 200:
            return status, headers, rest.decode("latin-1")


def test_curl_hello_world_through_both_routers(mesh_env, proxies_alive):
    """The seed's demo: curl on node 2 asks hello (node 1), which asks world (node 2)."""
    res = mesh_env.curl(2, ["-i", "http://hello/"], proxy_node=2)
    assert res.returncode == 0, res.stderr
    status, headers, body = split_curl_i(res.stdout)
    assert status == 200, res.stdout
    ip1, ip2 = re.escape(mesh_env.hello_ip), re.escape(mesh_env.world_ip)
    assert re.fullmatch(rf"Hello \({ip1}\) world \({ip2}\)!!\n?", body), body
    # node 1's incoming router and node 2's outgoing router both appended themselves
    assert header(headers, "via") == "1.1 linkerd, 1.1 linkerd"
    assert header(headers, "l5d-success-class") == "1.0"
    assert header(headers, "l5d-err") is None
    proxies_alive()


def test_seed_admin_ping_check(mesh_env):
    """The seed article's TLS check, verbatim: an l5d-dtab override routes a request that
    arrived on node 1's TLS incoming router to node 1's admin server."""
    n1 = mesh_env.node(1).ip
    res = mesh_env.curl(2, ["-skH", f"l5d-dtab: /svc=>/$/inet/{n1}/9990;",
                            f"https://{n1}:4141/admin/ping"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == b"pong"


def test_pod_sees_linkerd_request_headers(mesh_env):
    """What the pod behind node 2 receives from a request sent on node 1."""
    res = mesh_env.curl(1, ["-i", "-H", "X-Test: through-the-mesh",
                            "http://echo/some/path?q=1&r=two"], proxy_node=1)
    assert res.returncode == 0, res.stderr
    status, headers, body = split_curl_i(res.stdout)
    assert status == 200, res.stdout
    assert header(headers, "via") == "1.1 linkerd, 1.1 linkerd"
    seen = json.loads(body)
    assert seen["origin"] == "echo"
    # absolute-form from the http_proxy client became origin-form with Host (spec §4.1)
    assert seen["target"] == "/some/path?q=1&r=two"
    h = {}
    for name, value in seen["headers"]:
        assert name.lower() not in h, f"duplicate header {name}"
        h[name.lower()] = value
    assert h["host"] == "echo"
    assert h["x-test"] == "through-the-mesh"
    # the incoming router (last hop) overwrote the destination headers (spec §6.3)
    assert h["l5d-dst-service"] == "/svc/echo"
    assert h["l5d-dst-client"] == "/#/local/echo"
    assert "l5d-dst-residual" not in h
    assert h["via"] == "1.1 linkerd, 1.1 linkerd"
    assert re.fullmatch(r"[0-9a-f]{16}", h["l5d-reqid"]), h["l5d-reqid"]
    assert "l5d-ctx-trace" in h
    assert "l5d-dtab" not in h and "l5d-ctx-dtab" not in h
    # hop-by-hop framing: curl sent no body, so none is announced
    assert "transfer-encoding" not in h
    assert h.get("content-length") in (None, "0")


def test_l5d_dtab_override_travels_to_the_next_hop(mesh_env):
    """`l5d-dtab` given at node 1 becomes `l5d-ctx-dtab` and also routes at node 2
    (spec §6.1/§6.2): Host `alias` has no discovery entry anywhere."""
    res = mesh_env.curl(1, ["-i", "-H", "l5d-dtab: /svc/alias=>/svc/echo",
                            "http://alias/x"], proxy_node=1)
    assert res.returncode == 0, res.stderr
    status, headers, body = split_curl_i(res.stdout)
    assert status == 200, res.stdout
    seen = json.loads(body)
    h = {name.lower(): value for name, value in seen["headers"]}
    assert seen["origin"] == "echo"
    assert h["host"] == "alias"
    assert h["l5d-ctx-dtab"] == "/svc/alias=>/svc/echo"
    assert "l5d-dtab" not in h
    assert h["l5d-dst-service"] == "/svc/alias"


def test_unknown_service_is_502_with_l5d_err(mesh_env):
    res = mesh_env.curl(1, ["-i", "http://no-such-service/"], proxy_node=1)
    assert res.returncode == 0, res.stderr
    status, headers, body = split_curl_i(res.stdout)
    assert status == 502
    assert (header(headers, "l5d-err") or "").startswith("Unable+to+route+request%21")
    assert body.startswith("Unable to route request!")
    assert "service name: /svc/no-such-service" in body
