"""`fastmesh demo`: a whole mesh on this one machine, the seed article's topology.

Two "nodes" (network namespaces, or 127.0.0.2/.3 without root), each running a fastmesh
with an outgoing router (:4140, plain), an incoming router (:4141, TLS with freshly made
mesh certificates) and admin (:9990); `hello` on node 1 and `world` on node 2. Service
discovery is the io.l5d.fs namer: `mesh/<svc>` lists the node proxies (:4141) in front of
a service — what linkerd's daemonset transformer computes from Kubernetes — and each
node's `local/<svc>` lists the service's pods on that node, as the localnode transformer
keeps them.

The check sends `GET http://hello/` to node 2's outgoing router (http_proxy style), so
both hops cross nodes: client → node 2 :4140 → TLS → node 1 :4141 → hello → node 1 :4140
→ TLS → node 2 :4141 → world, and back.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ANSWER_RE = re.compile(r"^Hello \(([0-9a-f.:]+)\) world \(([0-9a-f.:]+)\)!!$")


@dataclass
class DemoNode:
    node: object          # fastmesh.nodes.Node
    pod_ip: str
    config: Path
    proxy: object = None  # subprocess.Popen


def node_config(*, node_ip: str, certs, workdir: Path | None = None,
                node_dir: Path | None = None, mesh_dir: Path | None = None,
                local_dir: Path | None = None, admin_port: int = 9990, out_port: int = 4140,
                in_port: int = 4141, extra_dtab: str = "") -> str:
    """The linkerd-1.x config one node runs (also what the end-to-end tests use).

    Discovery is two io.l5d.fs namers: `mesh_dir` (default `<workdir>/disco/mesh`) lists
    the node proxies in front of each service, `local_dir` (default `<node_dir>/local`)
    the service's pods on this node. `extra_dtab` is appended to both routers' dtabs.
    """
    mesh_dir = mesh_dir if mesh_dir is not None else workdir / "disco" / "mesh"
    local_dir = local_dir if local_dir is not None else node_dir / "local"
    return f"""\
admin:
  ip: {node_ip}
  port: {admin_port}
namers:
- kind: io.l5d.fs
  rootDir: {mesh_dir}
- kind: io.l5d.fs
  prefix: /local
  rootDir: {local_dir}
telemetry:
- kind: io.l5d.prometheus
routers:
- protocol: http
  label: outgoing
  dtab: |
    /srv  => /#/io.l5d.fs;
    /host => /srv;
    /svc  => /host;
    {extra_dtab}
  servers:
  - port: {out_port}
    ip: {node_ip}
  client:
    tls:
      commonName: linkerd
      trustCerts:
      - {certs.ca_cert}
- protocol: http
  label: incoming
  dtab: |
    /srv  => /#/local;
    /host => /srv;
    /svc  => /host;
    {extra_dtab}
  servers:
  - port: {in_port}
    ip: {node_ip}
    tls:
      certPath: {certs.cert}
      keyPath: {certs.key}
"""


def write_disco(workdir: Path, node_dir: Path, services: dict[str, tuple[str, str, int]],
                here_ip: str) -> None:
    """mesh/<svc> → the node proxy in front of it; local/<svc> → its pods on this node."""
    mesh = workdir / "disco" / "mesh"
    mesh.mkdir(parents=True, exist_ok=True)
    (node_dir / "local").mkdir(parents=True, exist_ok=True)
    for name, (node_ip, pod_ip, port) in services.items():
        (mesh / name).write_text(f"{node_ip} 4141\n")
        if node_ip == here_ip:
            (node_dir / "local" / name).write_text(f"{pod_ip} {port}\n")


def ask_hello(node_ip: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET http://hello/ through a node's outgoing router, as an http_proxy client does."""
    conn = http.client.HTTPConnection(node_ip, 4140, timeout=timeout)
    try:
        conn.request("GET", "http://hello/", headers={"Host": "hello"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace").strip()
    finally:
        conn.close()


def run_demo(*, once: bool = False, workdir: str | None = None, loopback: bool = False) -> int:
    from fastmesh.certs import generate_mesh_certs
    from fastmesh.nodes import Mesh

    work = Path(workdir or tempfile.mkdtemp(prefix="fastmesh-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    certs_dir = work / "certs"
    if (certs_dir / "certificate.pem").exists():
        from fastmesh.certs import MeshCertPaths
        certs = MeshCertPaths.in_dir(certs_dir)
    else:
        certs = generate_mesh_certs(certs_dir)
    print(f"fastmesh demo: working in {work}")

    with Mesh(2, mode="loopback" if loopback else "auto") as mesh:
        n1, n2 = mesh.node(1), mesh.node(2)
        netns = mesh.mode == "netns"
        print(f"nodes: {mesh.mode} mode"
              + (f" ({mesh.fallback_reason})" if mesh.fallback_reason else "")
              + f"; node1 {n1.ip}, node2 {n2.ip}")
        hello_ip = n1.add_pod_ip() if netns else n1.ip
        world_ip = n2.add_pod_ip() if netns else n2.ip
        services = {"hello": (n1.ip, hello_ip, 7777), "world": (n2.ip, world_ip, 7778)}
        nodes = []
        for n in (n1, n2):
            node_dir = work / n.name
            write_disco(work, node_dir, services, n.ip)
            cfg = node_dir / "fastmesh.yaml"
            cfg.write_text(node_config(node_ip=n.ip, workdir=work, node_dir=node_dir, certs=certs))
            nodes.append(DemoNode(n, hello_ip if n is n1 else world_ip, cfg))

        py = sys.executable
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        for dn in nodes:
            dn.proxy = dn.node.popen([py, "-m", "fastmesh", "run", str(dn.config)],
                                     stdout=open(logs / f"{dn.node.name}-fastmesh.log", "w"),
                                     stderr=subprocess_stdout())
        n2.popen([py, "-m", "fastmesh", "world", f"-addr={world_ip}:7778"],
                 env={**os.environ, "POD_IP": world_ip, "TARGET_WORLD": "world"},
                 stdout=open(logs / "world.log", "w"), stderr=subprocess_stdout())
        n1.popen([py, "-m", "fastmesh", "hello", f"-addr={hello_ip}:7777", "-text=Hello",
                  "-target=world"],
                 env={**os.environ, "POD_IP": hello_ip, "http_proxy": f"{n1.ip}:4140"},
                 stdout=open(logs / "hello.log", "w"), stderr=subprocess_stdout())
        try:
            for dn in nodes:
                for port in (4140, 4141, 9990):
                    dn.node.wait_for_port(port, timeout=20.0)
            n1.wait_for_port(7777, ip=hello_ip, timeout=20.0)
            n2.wait_for_port(7778, ip=world_ip, timeout=20.0)
        except Exception as exc:
            print(f"fastmesh demo: the mesh did not come up: {exc}; logs in {logs}", file=sys.stderr)
            return 1

        status, answer = 0, ""
        for _ in range(20):   # the fs namers load within a moment; retry briefly
            try:
                status, answer = ask_hello(n2.ip)
            except OSError as exc:
                status, answer = 0, str(exc)
            if status == 200:
                break
            time.sleep(0.25)
        ok = status == 200 and ANSWER_RE.match(answer) is not None
        print()
        print(f"$ http_proxy=http://{n2.ip}:4140 curl http://hello/")
        print(answer if status == 200 else f"FAILED: HTTP {status}: {answer}")
        print()
        print("path: client → node2 :4140 → TLS (verified 'linkerd') → node1 :4141 → hello"
              " → node1 :4140 → TLS → node2 :4141 → world")
        print("admin:")
        for n in (n1, n2):
            print(f"  http://{n.ip}:9990/                            dashboard")
            print(f"  http://{n.ip}:9990/admin/metrics/prometheus   metrics")
            print(f"  http://{n.ip}:9990/delegator                   dtab playground")
        print("try:")
        print(f"  curl -skH 'l5d-dtab: /svc=>/$/inet/{n1.ip}/9990;' https://{n1.ip}:4141/admin/ping")
        if netns:
            print(f"  ip netns exec {n1.netns} bash    # a shell on node 1")
        if once:
            return 0 if ok else 1
        print("\nthe mesh is up; Ctrl-C stops it")
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        return 0 if ok else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def subprocess_stdout():
    import subprocess
    return subprocess.STDOUT
