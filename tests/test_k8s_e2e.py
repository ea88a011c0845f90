"""The seed's own linkerd configs, end to end, with Kubernetes discovery from the fake API.

* The TLS DaemonSet config (tests/data/configs/linkerd-tls-example.yaml) on two network-
  namespace nodes. A copy is rewritten only where the test must: the namer's `host/port`
  and the daemonset transformer's `k8sHost/k8sPort` point at the fake API (in the root
  namespace, reached over the nodes' bridge), the certificate paths at freshly made mesh
  certificates, and admin/server IPs at each node's address. Every fastmesh gets
  `POD_IP` = its node address, as the DaemonSet's downward API gives it. The fake serves
  Endpoints `l5d` (outgoing/incoming/admin on both node IPs), `hello` (a pod IP on node 1)
  and `world-v1` (a pod IP on node 2), in the fixtures' shapes. Checks: `curl` through
  node 2 gets `Hello (...) world (...)!!` crossing nodes both ways over TLS, and the seed's
  own `l5d-dtab: /svc=>/#/io.l5d.k8s/default/admin/l5d;` admin ping answers `pong`.
* The non-TLS config (tests/data/configs/linkerd-example.yaml) run **unchanged** inside a
  node whose loopback has the fake API on 127.0.0.1:8001 (the `kubectl proxy` sidecar's
  place): it starts, and a request to `world` goes outgoing → incoming → pod.

Needs root and `ip netns` (the daemonset transformer works by /24 subnets, which loopback
addresses 127.0.0.2/.3 cannot give two nodes).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from e2e import BackgroundLoop, listen_socket, tail, wait_port
from k8s_fake import FakeKubeApi, fixture

from fastmesh.certs import generate_mesh_certs
from fastmesh.nodes import Mesh

pytestmark = [pytest.mark.slow, pytest.mark.netns]

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "tests" / "data" / "configs"
DAEMONSET_CLIENT = "%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/world-v1"


def _fixture_item(name: str) -> dict:
    return copy.deepcopy(next(i for i in fixture("endpoints-list-default.json")["items"]
                              if i["metadata"]["name"] == name))


def _readdress(obj: dict, addresses: list[tuple[str, str]]) -> dict:
    """The fixture object with its addresses replaced (ports and shape kept)."""
    assert obj.get("subsets"), "the fixture object has subsets"
    for subset in obj["subsets"]:
        for key in ("addresses", "notReadyAddresses"):
            if key in subset:
                subset[key] = [dict(subset[key][0], ip=ip, nodeName=node,
                                    targetRef=dict(subset[key][0].get("targetRef", {}), name=f"pod-{ip}"))
                               for ip, node in addresses]
    return obj


def mesh_objects(n1, n2, hello_ip: str, world_ip: str) -> dict[str, dict]:
    l5d = _readdress(_fixture_item("l5d"), [(n1.ip, n1.name), (n2.ip, n2.name)])
    world = _readdress(_fixture_item("world-v1"), [(world_ip, n2.name)])
    # `hello` has no subsets in the list; the watch fixture's MODIFIED event populates it
    populated = next(e["object"] for e in fixture("watch-endpoints-sequence.json")["response"]["events"]
                     if e["object"]["metadata"].get("name") == "hello")
    hello = _readdress(copy.deepcopy(populated), [(hello_ip, n1.name)])
    return {"l5d": l5d, "world-v1": world, "hello": hello}


def tls_config_for(node_ip: str, api: tuple[str, int], certs) -> str:
    data = yaml.safe_load((CONFIGS / "linkerd-tls-example.yaml").read_text())
    data["admin"]["ip"] = node_ip
    data["namers"][0].update(host=api[0], port=api[1])
    outgoing, incoming = data["routers"]
    outgoing["interpreter"]["transformers"][0].update(k8sHost=api[0], k8sPort=api[1])
    outgoing["client"]["tls"]["trustCerts"] = [str(certs.ca_cert)]
    incoming["servers"][0]["tls"].update(certPath=str(certs.cert), keyPath=str(certs.key))
    for router in data["routers"]:
        for server in router["servers"]:
            server["ip"] = node_ip
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def mesh():
    m = Mesh(2)
    if m.mode != "netns":
        reason = m.fallback_reason
        m.close()
        pytest.skip(f"needs network-namespace nodes ({reason})")
    yield m
    m.close()


@pytest.fixture(scope="module")
def loop():
    bg = BackgroundLoop()
    yield bg
    bg.close()


def curl(node, args: list[str], *, proxy: str | None = None, timeout: float = 20.0):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if proxy:
        env["http_proxy"] = proxy
    return node.run(["curl", "-sS", "--max-time", str(int(timeout) - 2), *args], env=env,
                    capture_output=True, text=True, timeout=timeout)


def test_tls_daemonset_config_hello_world_across_nodes(mesh, loop, tmp_path):
    n1, n2 = mesh.node(1), mesh.node(2)
    hello_ip, world_ip = n1.add_pod_ip(), n2.add_pod_ip()
    fake = loop.run(FakeKubeApi().start(mesh.root_ip, 0))
    for obj in mesh_objects(n1, n2, hello_ip, world_ip).values():
        loop.call(fake.put, "endpoints", obj)
    certs = generate_mesh_certs(tmp_path / "certs")
    logs = tmp_path / "logs"
    logs.mkdir()
    py = sys.executable
    procs = {}
    try:
        for n in (n1, n2):
            cfg = tmp_path / f"{n.name}.yaml"
            cfg.write_text(tls_config_for(n.ip, (fake.host, fake.port), certs))
            with open(logs / f"{n.name}.log", "w") as log:
                procs[n.index] = n.popen([py, "-m", "fastmesh", "run", str(cfg)],
                                         env={**os.environ, "POD_IP": n.ip},
                                         stdout=log, stderr=subprocess.STDOUT)
        with open(logs / "world.log", "w") as log:
            n2.popen([py, "-m", "fastmesh", "world", f"-addr={world_ip}:7778"],
                     env={**os.environ, "POD_IP": world_ip, "TARGET_WORLD": "world"},
                     stdout=log, stderr=subprocess.STDOUT)
        with open(logs / "hello.log", "w") as log:
            n1.popen([py, "-m", "fastmesh", "hello", f"-addr={hello_ip}:7777", "-text=Hello",
                      "-target=world"],
                     env={**os.environ, "POD_IP": hello_ip, "http_proxy": f"{n1.ip}:4140"},
                     stdout=log, stderr=subprocess.STDOUT)
        for n in (n1, n2):
            for port in (4140, 4141, 9990):
                wait_port(n.ip, port, 20.0, procs[n.index], logs / f"{n.name}.log")
        wait_port(hello_ip, 7777, 20.0, log=logs / "hello.log")
        wait_port(world_ip, 7778, 20.0, log=logs / "world.log")

        # the seed's demo: from node 2, hello (node 1) calls world (node 2)
        res = curl(n2, ["http://hello/"], proxy=f"http://{n2.ip}:4140")
        assert res.returncode == 0, res.stderr + tail(logs / f"{n2.name}.log")
        want = rf"Hello \({re.escape(hello_ip)}\) world \({re.escape(world_ip)}\)!!"
        assert re.fullmatch(want, res.stdout.strip()), res.stdout

        # the seed's TLS check, verbatim, on both nodes
        for n in (n1, n2):
            ping = curl(n2, ["-skH", "l5d-dtab: /svc=>/#/io.l5d.k8s/default/admin/l5d;",
                             f"https://{n.ip}:4141/admin/ping"])
            assert (ping.returncode, ping.stdout.strip()) == (0, "pong"), ping.stderr

        # the client names the metrics show (spec §13 item 5)
        metrics = urllib.request.urlopen(f"http://{n1.ip}:9990/admin/metrics/prometheus",
                                         timeout=10).read().decode()
        assert DAEMONSET_CLIENT in metrics
        metrics2 = urllib.request.urlopen(f"http://{n2.ip}:9990/admin/metrics/prometheus",
                                          timeout=10).read().decode()
        assert f"%/io.l5d.k8s.localnode/{n2.ip}/#/io.l5d.k8s/default/http/world-v1" in metrics2

        # discovery is live: world-v1 scaled to zero → 502 through the mesh, then back
        loop.call(fake.put, "endpoints", _readdress(_fixture_item("world-v1"), [(world_ip, n2.name)])
                  | {"subsets": []})
        res = curl(n1, ["-o", "/dev/null", "-w", "%{http_code}", "http://world/"],
                   proxy=f"http://{n1.ip}:4140")
        assert res.stdout == "502", res.stdout
        loop.call(fake.put, "endpoints", mesh_objects(n1, n2, hello_ip, world_ip)["world-v1"])
        res = curl(n1, ["http://world/"], proxy=f"http://{n1.ip}:4140")
        assert res.stdout.strip() == f"world ({world_ip})!", res.stdout
        for i, p in procs.items():
            assert p.poll() is None, tail(logs / f"node{i}.log")
    finally:
        for p in procs.values():
            mesh.stop(p)
        loop.run(fake.stop())


def test_unchanged_linkerd_config_starts_and_routes(mesh, loop, tmp_path):
    """linkerd.yml's config exactly as shipped: namer and transformer at localhost:8001,
    everything on 0.0.0.0. Inside node 1, 127.0.0.1:8001 is the fake API."""
    n1 = mesh.node(1)
    pod_ip = n1.add_pod_ip()
    sock = listen_socket("127.0.0.1", 8001, n1.netns)
    fake = loop.run(FakeKubeApi().start(sock=sock))
    l5d = _readdress(_fixture_item("l5d"), [(n1.ip, n1.name)])
    world = _readdress(_fixture_item("world-v1"), [(pod_ip, n1.name)])
    for obj in (l5d, world):
        loop.call(fake.put, "endpoints", obj)
    config = CONFIGS / "linkerd-example.yaml"
    log_path = tmp_path / "fastmesh.log"
    py = sys.executable
    with open(log_path, "w") as log:
        proc = n1.popen([py, "-m", "fastmesh", "run", str(config)], env={**os.environ, "POD_IP": n1.ip},
                        stdout=log, stderr=subprocess.STDOUT)
    app = n1.popen([py, "-m", "fastmesh", "world", f"-addr={pod_ip}:7778"],
                   env={**os.environ, "POD_IP": pod_ip, "TARGET_WORLD": "world"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for port in (4140, 4141, 9990):
            wait_port(n1.ip, port, 20.0, proc, log_path)
        wait_port(pod_ip, 7778, 20.0)
        # the daemonset transformer's own client watches `l5d` from the start
        loop.run(fake.wait_for(lambda: fake.watch_count("/endpoints/l5d") >= 1, timeout=10))
        res = curl(n1, ["-i", "http://world/"], proxy=f"http://{n1.ip}:4140")
        assert res.returncode == 0, res.stderr + tail(log_path)
        assert res.stdout.rstrip().endswith(f"world ({pod_ip})!"), res.stdout
        assert "l5d-err" not in res.stdout.lower()
        query = urllib.parse.urlencode({
            "namespace": "outgoing", "path": "/svc/world",
            "dtab": "/srv=>/#/io.l5d.k8s/default/http;/host=>/srv;/svc=>/host;/host/world=>/srv/world-v1"})
        delegated = json.loads(urllib.request.urlopen(f"http://{n1.ip}:9990/delegator.json?{query}",
                                                      timeout=10).read())
        assert DAEMONSET_CLIENT.lstrip("%") in json.dumps(delegated)
        assert proc.poll() is None, tail(log_path)
    finally:
        mesh.stop(proc)
        mesh.stop(app)
        loop.run(fake.stop())
        sock.close()
