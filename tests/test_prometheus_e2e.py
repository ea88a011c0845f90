"""A real Prometheus scrapes a real two-node mesh (hello → world over TLS) while traffic flows.

The demo's topology (fastmesh.demo: node configs, io.l5d.fs discovery, hello on node 1,
world on node 2), network namespaces when we are root (else 127.0.0.x), the Debian
`prometheus` binary started by us on loopback with its own config and a temporary TSDB,
scraping each node's :9990/admin/metrics/prometheus every second. The test queries
Prometheus' HTTP API for the request counts it sent, per client label, and `up`;
`promtool check metrics` reads the exposition.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port, wait_port
from tests.test_metrics import http_get, wait_until

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.netns,
    pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                       reason="prometheus/promtool not installed (make sysdeps installs them)"),
]

N = 30

# The only promtool lint problems the exposition may have: both come with linkerd's names
# (every linkerd metric name has ':'; request_latency_ms has an abbreviated unit).
ALLOWED_LINT = [re.compile(r"^\S+ metric names should not contain ':'$"),
                re.compile(r"^\S*_ms(_count|_sum|_avg)? metric names should not contain abbreviated units$")]


class PromServer:
    """prometheus on 127.0.0.1:<free port>, its own config and TSDB dir; killed by PID."""

    def __init__(self, workdir: Path, targets: list[str]):
        self.port = free_port()
        self.dir = workdir / "prometheus"
        self.dir.mkdir()
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "- job_name: fastmesh\n"
            "  metrics_path: /admin/metrics/prometheus\n"
            f"  static_configs: [{{targets: {json.dumps(targets)}}}]\n")
        self.log = open(self.dir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.port, timeout=30)

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.parse.quote(promql)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, promql: str, *label_names: str) -> dict[tuple, float]:
        return {tuple(r["metric"].get(n, "") for n in label_names): float(r["value"][1])
                for r in self.query(promql)}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture(scope="module")
def mesh_and_prometheus(tmp_path_factory):
    from fastmesh.certs import generate_mesh_certs
    from fastmesh.demo import ask_hello, node_config, write_disco
    from fastmesh.nodes import Mesh

    work = tmp_path_factory.mktemp("prom-e2e")
    certs = generate_mesh_certs(work / "certs")
    py = sys.executable
    env = {**os.environ, "FASTMESH_HISTOGRAM_SNAPSHOT_S": "2"}
    with Mesh(2) as mesh:
        n1, n2 = mesh.node(1), mesh.node(2)
        netns = mesh.mode == "netns"
        hello_ip = n1.add_pod_ip() if netns else n1.ip
        world_ip = n2.add_pod_ip() if netns else n2.ip
        services = {"hello": (n1.ip, hello_ip, 7777), "world": (n2.ip, world_ip, 7778)}
        logs = work / "logs"
        logs.mkdir()
        for n in (n1, n2):
            node_dir = work / n.name
            write_disco(work, node_dir, services, n.ip)
            cfg = node_dir / "fastmesh.yaml"
            cfg.write_text(node_config(node_ip=n.ip, workdir=work, node_dir=node_dir, certs=certs))
            n.popen([py, "-m", "fastmesh", "run", str(cfg)], env=env,
                    stdout=open(logs / f"{n.name}.log", "w"), stderr=subprocess.STDOUT)
        n2.popen([py, "-m", "fastmesh", "world", f"-addr={world_ip}:7778"],
                 env={**env, "POD_IP": world_ip, "TARGET_WORLD": "world"},
                 stdout=open(logs / "world.log", "w"), stderr=subprocess.STDOUT)
        n1.popen([py, "-m", "fastmesh", "hello", f"-addr={hello_ip}:7777", "-text=Hello",
                  "-target=world"],
                 env={**env, "POD_IP": hello_ip, "http_proxy": f"{n1.ip}:4140"},
                 stdout=open(logs / "hello.log", "w"), stderr=subprocess.STDOUT)
        for n in (n1, n2):
            for port in (4140, 4141, 9990):
                n.wait_for_port(port, timeout=30)
        n1.wait_for_port(7777, ip=hello_ip, timeout=30)
        n2.wait_for_port(7778, ip=world_ip, timeout=30)
        prom = PromServer(work, [f"{n1.ip}:9990", f"{n2.ip}:9990"])
        try:
            # warm up until the whole chain answers (the fs namers load within a moment)
            wait_until(lambda: ask_hello(n2.ip)[0] == 200, timeout=30, interval=0.25,
                       what="hello → world through the mesh")
            # traffic flows while Prometheus scrapes: wait for its first scrape of both
            wait_until(lambda: len(prom.values("up == 1", "instance")) == 2, timeout=30,
                       interval=0.25, what="Prometheus to scrape both nodes")
            # counts before our N requests, read from the nodes themselves
            base = {n.name: json.loads(http_get(f"http://{n.ip}:9990/admin/metrics.json")[2])
                    for n in (n1, n2)}
            answers = []
            for _ in range(N):                    # spread over > 1 snapshot window (2 s)
                answers.append(ask_hello(n2.ip))
                time.sleep(0.1)
            yield {"mesh": mesh, "n1": n1, "n2": n2, "prom": prom, "base": base,
                   "answers": answers, "logs": logs}
        finally:
            prom.close()


def _client_key(node, client: str) -> tuple:
    return (f"{node.ip}:9990", "outgoing" if client.startswith("#/io.l5d.fs") else "incoming", client)


def test_every_answer_came_back(mesh_and_prometheus):
    answers = mesh_and_prometheus["answers"]
    assert [s for s, _ in answers] == [200] * N
    assert all(re.match(r"^Hello \(\S+\) world \(\S+\)!!$", a) for _, a in answers), answers[:3]


def test_prometheus_scrapes_both_nodes(mesh_and_prometheus):
    prom, n1, n2 = (mesh_and_prometheus[k] for k in ("prom", "n1", "n2"))
    up = wait_until(lambda: (v := prom.values("up", "instance")) and len(v) == 2 and v,
                    timeout=30, interval=0.5, what="both targets scraped")
    assert up == {(f"{n1.ip}:9990",): 1.0, (f"{n2.ip}:9990",): 1.0}


def test_prometheus_has_the_request_counts_per_client(mesh_and_prometheus):
    prom, n1, n2, base = (mesh_and_prometheus[k] for k in ("prom", "n1", "n2", "base"))
    # every hop of GET http://hello/ sent to node 2: N requests per client scope
    hops = [(n2, "outgoing", "#/io.l5d.fs/hello"), (n1, "incoming", "#/local/hello"),
            (n1, "outgoing", "#/io.l5d.fs/world"), (n2, "incoming", "#/local/world")]
    expected = {}
    for node, rt, client in hops:
        before = base[node.name].get(f"rt/{rt}/client/{client}/requests", 0)
        expected[(f"{node.ip}:9990", rt, client)] = float(before + N)

    def counts():
        got = prom.values("rt:client:requests", "instance", "rt", "client")
        return all(got.get(k) == v for k, v in expected.items()) and got

    got = wait_until(counts, timeout=30, interval=0.5,
                     what=f"rt:client:requests to reach {expected}")
    for k, v in expected.items():
        assert got[k] == v, (k, got)
    # the servers saw them too, under linkerd's server label
    servers = prom.values('rt:server:requests{rt="incoming"}', "instance", "server")
    assert servers[(f"{n1.ip}:9990", f"{n1.ip}/4141")] >= N
    assert servers[(f"{n2.ip}:9990", f"{n2.ip}/4141")] >= N
    tls = prom.values("rt:client:tls_handshakes", "instance", "client")
    assert tls[(f"{n2.ip}:9990", "#/io.l5d.fs/hello")] >= 1
    assert prom.values("rt:client:status:2XX", "instance", "client")[
        (f"{n2.ip}:9990", "#/io.l5d.fs/hello")] == expected[(f"{n2.ip}:9990", "outgoing", "#/io.l5d.fs/hello")]
    # instance counting as linkerd dashboards do it
    assert prom.query("count(jvm:uptime)")[0]["value"][1] == "2"


def test_latency_both_ways_in_prometheus(mesh_and_prometheus):
    prom, n2 = mesh_and_prometheus["prom"], mesh_and_prometheus["n2"]
    sel = f'instance="{n2.ip}:9990",client="#/io.l5d.fs/hello"'
    # linkerd-compatible quantile lines of a snapshot window that had traffic
    p99 = wait_until(lambda: prom.query(f'max_over_time(rt:client:request_latency_ms{{{sel},quantile="0.99"}}[2m])'),
                     timeout=20, interval=0.5, what="a quantile line")
    assert 0 < float(p99[0]["value"][1]) < 10_000
    # the cumulative histogram works with histogram_quantile
    q = prom.query(f"histogram_quantile(0.5, sum by (le) (increase(rt:client:request_latency_seconds_bucket{{{sel}}}[5m])))")
    assert q and 0 < float(q[0]["value"][1]) < 10


def test_promtool_accepts_the_exposition(mesh_and_prometheus):
    n1 = mesh_and_prometheus["n1"]
    status, headers, body = http_get(f"http://{n1.ip}:9990/admin/metrics/prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out, rc = _promtool(body)
    assert "error while linting" not in out, out[:2000]     # it parsed
    assert rc in (0, 3), out[:2000]                         # 3 = lint problems only
    problems = [line for line in out.splitlines() if line.strip()]
    unexpected = [p for p in problems if not any(a.match(p) for a in ALLOWED_LINT)]
    assert unexpected == [], unexpected
    # the check can fail: the same text with one broken line is a parse error
    out, rc = _promtool(body + b'rt:broken{client="x" 1\n')
    assert rc == 1 and "error while linting" in out, out[:500]


def _promtool(exposition: bytes) -> tuple[str, int]:
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True,
                         timeout=30)
    return (res.stdout + res.stderr).decode(), res.returncode
