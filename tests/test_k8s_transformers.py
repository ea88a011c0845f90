"""io.l5d.k8s.daemonset and io.l5d.k8s.localnode (spec §5.2, §5.3, §5.4).

The daemonset transformer reads its gateways (the `l5d` Service's `incoming` port) from
the fake API server with its own client; destinations are bound names with AddrVars, as
the k8s namer gives them. Cases are the spec's facts (gateways 1.1.1.1 / 1.1.2.1 /
1.1.3.1 :4141; local 1.1.1.1 keeps 1.1.1.2 and 1.1.1.3) plus the rules around them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from k8s_fake import FakeKubeApi
from k8s_harness import P, addrs, endpoints, run

from fastmesh.namers.k8s import K8sNamer
from fastmesh.naming import (AddrBound, AddrFailed, AddrNeg, AddrPending, AddrVar, Address, BoundName,
                             Dtab, Interpreter, Leaf, Meta, Neg, build_transformer)
from fastmesh.naming.k8s_transformers import (NODE_NAME_MISSING, POD_IP_MISSING, DaemonSetTransformer,
                                              build_localnode)

GATEWAYS = [("1.1.1.1", "node-1"), ("1.1.2.1", "node-2"), ("1.1.3.1", "node-3")]
WORLD_ID = P("/#/io.l5d.k8s/default/http/world-v1")


def bound(*hostports: str, nodes: dict | None = None, residual: str = "/") -> BoundName:
    addresses = []
    for hp in hostports:
        host, port = hp.rsplit(":", 1)  # "2001:db8::1:80" → IPv6 host, port 80
        meta = Meta({"nodeName": nodes[host]}) if nodes and host in nodes else Meta()
        addresses.append(Address(host, int(port), meta))
    return BoundName(WORLD_ID, AddrVar(AddrBound(frozenset(addresses))), P(residual))


def current(name: BoundName):
    """The value a client sees: observe the derived var (as the router does)."""
    handle = name.addr.observe(lambda _: None)
    value = name.addr.value
    handle.close()
    return value


class Gateways:
    """A fake API serving the `l5d` Endpoints, and a daemonset transformer reading them."""

    def __init__(self, gateways=GATEWAYS, host_network: bool = False, port_name: str = "incoming"):
        self.gateways = gateways
        self.host_network = host_network
        self.port_name = port_name

    async def __aenter__(self) -> "Gateways":
        self.fake = await FakeKubeApi().start()
        if self.gateways is not None:
            self.fake.put("endpoints", endpoints("l5d", list(self.gateways),
                                                 {"outgoing": 4140, "incoming": 4141, "admin": 9990}))
        params = {"namespace": "default", "service": "l5d", "port": self.port_name,
                  "k8sHost": "127.0.0.1", "k8sPort": self.fake.port}
        if self.host_network:
            params["hostNetwork"] = True
        self.t = build_transformer("io.l5d.k8s.daemonset", params)
        assert isinstance(self.t, DaemonSetTransformer)
        self.t.start(asyncio.get_running_loop())
        return self

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while self.t.gateway_var.value is AddrPending:
            assert loop.time() < deadline, "gateways still pending"
            await asyncio.sleep(0.005)

    async def __aexit__(self, *exc) -> None:
        self.t.close()
        await self.fake.stop()


def test_daemonset_spec_facts():
    async def body():
        async with Gateways() as g:
            await g.ready()
            t = g.t
            cases = {"1.1.1.55:8888": ["1.1.1.1:4141"], "1.1.2.55:8888": ["1.1.2.1:4141"],
                     "1.1.4.55:8888": AddrNeg}
            for dst, want in cases.items():
                out = t.map_bound(bound(dst, residual="/r"))
                assert out.id.show == ("/%/io.l5d.k8s.daemonset/default/incoming/l5d"
                                       "/#/io.l5d.k8s/default/http/world-v1")
                assert out.residual.show == "/r"
                got = current(out)
                assert (addrs(got) if isinstance(got, AddrBound) else got) == want, dst
            # 3 world pods on 2 nodes → 2 gateways (a set)
            three = t.map_bound(bound("1.1.1.10:7778", "1.1.1.11:7778", "1.1.2.10:7778"))
            assert addrs(current(three)) == ["1.1.1.1:4141", "1.1.2.1:4141"]
            # only IPv4 against IPv4; a DNS name is never local
            assert current(t.map_bound(bound("2001:db8::1:80", "world.local:80"))) is AddrNeg
            assert t.name == "SubnetGatewayTransformer"
            # the request went to the transformer's own client: Service l5d, by name
            assert g.fake.requests[0].path == "/api/v1/namespaces/default/endpoints/l5d"

    run(body)


def test_daemonset_follows_gateway_and_destination_changes():
    async def body():
        async with Gateways() as g:
            await g.ready()
            dst = bound("1.1.4.55:8888", "1.1.2.55:8888")
            out = g.t.map_bound(dst)
            seen = []
            handle = out.addr.observe(lambda a: seen.append(a), initial=True)
            assert addrs(seen[-1]) == ["1.1.2.1:4141"]
            # a fastmesh pod appears on node 4: the same leaf now reaches it too
            g.fake.put("endpoints", endpoints("l5d", GATEWAYS + [("1.1.4.1", "node-4")], {"incoming": 4141}))
            for _ in range(500):
                if len(seen) > 1:
                    break
                await asyncio.sleep(0.005)
            assert addrs(seen[-1]) == ["1.1.2.1:4141", "1.1.4.1:4141"]
            # the destinations move: recomputed from the same gateway set
            dst.addr.set(AddrBound(frozenset([Address("1.1.3.9", 8888)])))
            assert addrs(seen[-1]) == ["1.1.3.1:4141"]
            # destination states other than bound pass through
            dst.addr.set(AddrFailed("boom"))
            assert seen[-1] == AddrFailed("boom")
            # the l5d Service loses its pods: no gateway → Neg
            g.fake.put("endpoints", endpoints("l5d", [], {"incoming": 4141}))
            dst.addr.set(AddrBound(frozenset([Address("1.1.3.9", 8888)])))
            for _ in range(500):
                if g.t.gateway_var.value is AddrNeg:
                    break
                await asyncio.sleep(0.005)
            assert seen[-1] is AddrNeg
            handle.close()

    run(body)


def test_daemonset_gateways_pending_missing_or_port_unknown():
    async def body():
        async with Gateways(gateways=None) as g:  # no l5d Endpoints: 404
            out = g.t.map_bound(bound("1.1.1.55:8888"))
            await g.ready()
            assert current(out) is AddrNeg
        async with Gateways(port_name="nope") as g:  # the Service has no port `nope`
            await g.ready()
            assert current(g.t.map_bound(bound("1.1.1.55:8888"))) is AddrNeg
        # an API that never answers: the leaf stays pending
        fake = await FakeKubeApi().start()
        port = fake.port
        await fake.stop()
        t = build_transformer("io.l5d.k8s.daemonset", {"namespace": "default", "service": "l5d",
                                                        "port": "incoming", "k8sHost": "127.0.0.1",
                                                        "k8sPort": port})
        t.start(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        assert current(t.map_bound(bound("1.1.1.55:8888"))) is AddrPending
        t.close()

    run(body)


def test_daemonset_host_network_matches_node_names():
    async def body():
        # hostNetwork pods: the gateways have the node addresses; the nodeName decides
        async with Gateways(gateways=[("10.0.0.1", "node-1"), ("10.0.0.2", "node-2")],
                            host_network=True) as g:
            await g.ready()
            t = g.t
            assert t.name == "MetadataGatewayTransformer"
            nodes = {"192.168.7.7": "node-2", "192.168.9.9": "node-1"}
            assert addrs(current(t.map_bound(bound("192.168.7.7:80", nodes=nodes)))) == ["10.0.0.2:4141"]
            both = t.map_bound(bound("192.168.7.7:80", "192.168.9.9:80", nodes=nodes))
            assert addrs(current(both)) == ["10.0.0.1:4141", "10.0.0.2:4141"]
            # no nodeName on the destination: only gateways without one match
            assert current(t.map_bound(bound("192.168.7.7:80"))) is AddrNeg
        async with Gateways(gateways=[("10.0.0.1", None)], host_network=True) as g:
            await g.ready()
            assert addrs(current(g.t.map_bound(bound("192.168.7.7:80")))) == ["10.0.0.1:4141"]

    run(body)


def test_daemonset_through_the_interpreter_with_the_blog_dtab():
    dtab = Dtab.read("/srv=>/#/io.l5d.k8s/default/http;/host=>/srv;/svc=>/host;/host/world=>/srv/world-v1")

    async def body():
        async with Gateways(gateways=[("10.180.7.2", "node-7"), ("10.180.4.2", "node-4")]) as g:
            g.fake.put("endpoints", endpoints("world-v1", [("10.180.7.14", "node-7")], {"http": 7778}))
            namer = K8sNamer("127.0.0.1", g.fake.port)
            namer.start(asyncio.get_running_loop())
            interp = Interpreter([namer], [g.t])
            await g.ready()
            assert interp.bind(dtab, P("/svc/world")).pending
            for _ in range(500):
                result = interp.bind(dtab, P("/svc/world"))
                if not result.pending:
                    break
                await asyncio.sleep(0.005)
            (name,) = result.bound_names()
            assert name.id.show == ("/%/io.l5d.k8s.daemonset/default/incoming/l5d"
                                    "/#/io.l5d.k8s/default/http/world-v1")
            assert addrs(current(name)) == ["10.180.7.2:4141"]
            namer.close()

    run(body)


def test_localnode_spec_facts_and_ids():
    t = build_localnode({}, {"POD_IP": "1.1.1.1"})
    assert t.prefix.show == "/%/io.l5d.k8s.localnode/1.1.1.1"
    out = t.map_bound(bound("1.1.1.2:80", "1.1.1.3:80", "1.1.2.2:80", "1.1.2.3:80", residual="/x"))
    assert out.id.show == "/%/io.l5d.k8s.localnode/1.1.1.1/#/io.l5d.k8s/default/http/world-v1"
    assert out.residual.show == "/x"
    assert addrs(current(out)) == ["1.1.1.2:80", "1.1.1.3:80"]
    assert current(t.map_bound(bound("1.1.2.2:80"))) is AddrNeg  # nothing local
    assert current(t.map_bound(bound("2001:db8::5:80"))) is AddrNeg  # IPv6 never matches the /24 mask
    for state in (AddrPending, AddrNeg, AddrFailed("x")):
        b = BoundName(WORLD_ID, AddrVar(state))
        assert current(t.map_bound(b)) == state  # non-bound states pass through
    # the prefix key replaces the kind segment, the POD_IP segment stays
    assert build_localnode({"prefix": "/local"}, {"POD_IP": "10.1.2.3"}).prefix.show == "/%/local/10.1.2.3"


def test_localnode_host_network_uses_node_name():
    t = build_localnode({"hostNetwork": True}, {"NODE_NAME": "node-7", "POD_IP": "9.9.9.9"})
    assert t.prefix.show == "/%/io.l5d.k8s.localnode/node-7"
    out = t.map_bound(bound("10.1.7.1:80", "10.1.4.1:80", "10.1.9.9:80",
                            nodes={"10.1.7.1": "node-7", "10.1.4.1": "node-4"}))
    assert addrs(current(out)) == ["10.1.7.1:80"]  # no nodeName: dropped


def test_localnode_environment_errors():
    with pytest.raises(ValueError) as exc:
        build_localnode({}, {})
    assert str(exc.value) == POD_IP_MISSING == "POD_IP env variable must be set to the pod's IP"
    with pytest.raises(ValueError) as exc:
        build_localnode({"hostNetwork": True}, {"POD_IP": "1.1.1.1"})
    assert str(exc.value) == NODE_NAME_MISSING == "NODE_NAME env variable must be set to the node's name"
    with pytest.raises(ValueError, match="unknown key 'port'"):
        build_localnode({"port": 1}, {"POD_IP": "1.1.1.1"})


def test_daemonset_config_errors():
    with pytest.raises(ValueError, match="'service' is required"):
        build_transformer("io.l5d.k8s.daemonset", {"namespace": "default", "port": "incoming"})
    with pytest.raises(ValueError, match="unknown key 'k8shost'"):
        build_transformer("io.l5d.k8s.daemonset", {"namespace": "d", "service": "l5d", "port": "incoming",
                                                    "k8shost": "x"})
    t = build_transformer("io.l5d.k8s.daemonset", {"namespace": "d", "service": "l5d", "port": "incoming",
                                                    "prefix": "/ds"})
    assert t.prefix.show == "/%/ds"
    assert t.gateways.port == 8001 and t.gateways.host == "localhost"  # its own client's defaults
    t.close()  # never started: nothing to stop


def test_missing_pod_ip_is_a_startup_error_with_the_yaml_path(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""\
routers:
- protocol: http
  label: incoming
  dtab: /svc => /$/inet/127.1/1;
  interpreter:
    kind: default
    transformers:
    - kind: io.l5d.k8s.localnode
  servers:
  - port: 0
""")
    env = {"PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "fastmesh", "check", str(cfg)], capture_output=True,
                         text=True, timeout=60, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("routers[0].interpreter.transformers[0]: POD_IP env variable must be set to the pod's IP"
            in res.stderr), res.stderr
    assert "Traceback" not in res.stderr
    ok = subprocess.run([sys.executable, "-m", "fastmesh", "check", str(cfg)], capture_output=True,
                        text=True, timeout=60, env={**env, "POD_IP": "10.1.2.3"})
    assert ok.returncode == 0, ok.stderr


def test_interpreter_leaf_shape_is_kept():
    """A transformer rewrites leaves only: Neg stays Neg, no fallback happens (spec §5.4)."""
    t = build_localnode({}, {"POD_IP": "1.1.1.1"})
    interp = Interpreter([], [t])
    result = interp.bind(Dtab.read("/svc/a => /$/inet/1.1.2.9/80 | /$/inet/1.1.1.9/80"), P("/svc/a"))
    (name,) = result.bound_names()
    assert name.id.show == "/%/io.l5d.k8s.localnode/1.1.1.1/$/inet/1.1.2.9/80"
    assert current(name) is AddrNeg
    assert interp.bind(Dtab.read("/svc/a => ~"), P("/svc/a")).tree is Neg
    assert isinstance(result.tree, Leaf)
