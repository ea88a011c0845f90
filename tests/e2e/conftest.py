"""Fixtures of the end-to-end tests: a three-node mesh with real fastmesh processes.

Topology (the demo's, plus test services): nodes are network namespaces when we are root
(else 127.0.0.2/.3/.4, or forced with FASTMESH_NODES_MODE=loopback). Every node runs
`fastmesh run` with `fastmesh.demo.node_config` (outgoing :4140, incoming :4141 with TLS,
admin :9990) and the io.l5d.fs discovery `fastmesh.demo.write_disco` lays out:

* node 1: the `hello` app;
* node 2: the `world` app, plus our own origins `echo` (header echo), `stream`
  (streams and digests bodies) and `ka` — sockets created inside node 2's namespace;
  `ka` is reached from other nodes through a counting TCP relay (`ka_relay`, in the root
  namespace), so tests can count the TLS connections between nodes;
* node 3: a rogue peer — same config, but its certificate comes from another CA; its
  `rogue` origin must never see a request from nodes 1/2.

The mesh is session-scoped (one start for all e2e modules). Tests that change discovery
(the wiretap) restore it in their own module-scoped fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from fastmesh.certs import generate_mesh_certs
from fastmesh.demo import node_config, write_disco
from fastmesh.nodes import Mesh, Node

from . import BackgroundLoop, HttpOrigin, TcpRelay, free_port, listen_socket, tail, wait_port

PORTS = (4140, 4141, 9990)


@dataclass
class MeshEnv:
    mesh: Mesh
    work: Path
    loop: BackgroundLoop
    certs: object                  # MeshCertPaths of the mesh CA
    rogue_certs: object            # MeshCertPaths of another CA (node 3)
    hello_ip: str
    world_ip: str
    echo: HttpOrigin               # on node 2
    stream: HttpOrigin             # on node 2
    rogue: HttpOrigin              # on node 3
    ka: HttpOrigin                 # on node 2, behind ka_relay
    ka_relay: TcpRelay             # root namespace → node 2 :4141
    proxies: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.mesh.mode

    def node(self, i: int) -> Node:
        return self.mesh.node(i)

    @property
    def root_ip(self) -> str:
        """Where test-side servers (relays) listen so that every node reaches them."""
        return self.mesh.root_ip

    @property
    def mesh_dir(self) -> Path:
        return self.work / "disco" / "mesh"

    def local_dir(self, i: int) -> Path:
        return self.work / self.node(i).name / "local"

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    def proxy_pid(self, i: int) -> int:
        return self.proxies[i].pid

    def curl(self, node: int, args: list[str], *, proxy_node: int | None = None,
             timeout: float = 20.0) -> subprocess.CompletedProcess:
        """Real curl run on node `node`; with `proxy_node`, `http_proxy` points at that
        node's outgoing router (the environment variable, as apps set it). Output stays
        bytes: the CRLFs of `curl -i` matter."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if proxy_node is not None:
            env["http_proxy"] = f"http://{self.node(proxy_node).ip}:4140"
        return self.node(node).run(["curl", "-sS", "--max-time", str(int(timeout) - 2), *args],
                                   env=env, capture_output=True, timeout=timeout)


def _origin(env_loop: BackgroundLoop, name: str, node: Node, ip: str) -> HttpOrigin:
    sock = listen_socket(ip, 0, node.netns)
    return env_loop.run(HttpOrigin(name).start(sock))


@pytest.fixture(scope="session")
def mesh_env(tmp_path_factory) -> Iterator[MeshEnv]:
    work = tmp_path_factory.mktemp("mesh")
    (work / "logs").mkdir()
    certs = generate_mesh_certs(work / "certs")
    rogue_certs = generate_mesh_certs(work / "rogue-certs")   # another CA, also "linkerd"
    loop = BackgroundLoop()
    mesh = Mesh(3)
    try:
        n1, n2, n3 = mesh.node(1), mesh.node(2), mesh.node(3)
        netns = mesh.mode == "netns"
        hello_ip = n1.add_pod_ip() if netns else n1.ip
        world_ip = n2.add_pod_ip() if netns else n2.ip
        rogue_ip = n3.add_pod_ip() if netns else n3.ip
        # In loopback mode pods share the node address; pick ports nobody holds.
        hello_port = 7777 if netns else free_port(hello_ip)
        world_port = 7778 if netns else free_port(world_ip)
        echo = _origin(loop, "echo", n2, world_ip)
        stream = _origin(loop, "stream", n2, world_ip)
        rogue = _origin(loop, "rogue", n3, rogue_ip)
        ka = _origin(loop, "ka", n2, world_ip)
        ka_relay = loop.run(TcpRelay((n2.ip, 4141)).start(listen_socket(mesh.root_ip)))
        services = {
            "hello": (n1.ip, hello_ip, hello_port),
            "world": (n2.ip, world_ip, world_port),
            "echo": (n2.ip, world_ip, echo.port),
            "stream": (n2.ip, world_ip, stream.port),
            "rogue": (n3.ip, rogue_ip, rogue.port),
            "ka": (n2.ip, world_ip, ka.port),
        }
        env = MeshEnv(mesh, work, loop, certs, rogue_certs, hello_ip, world_ip, echo, stream,
                      rogue, ka, ka_relay)
        py = sys.executable
        for n in (n1, n2, n3):
            node_dir = work / n.name
            write_disco(work, node_dir, services, n.ip)
        (env.mesh_dir / "ka").write_text(f"{ka_relay.address[0]} {ka_relay.address[1]}\n")
        for n in (n1, n2, n3):
            node_dir = work / n.name
            cfg = node_dir / "fastmesh.yaml"
            cfg.write_text(node_config(node_ip=n.ip, workdir=work, node_dir=node_dir,
                                       certs=rogue_certs if n is n3 else certs))
            with open(env.log(f"node{n.index}"), "w") as log:
                env.proxies[n.index] = n.popen([py, "-m", "fastmesh", "run", str(cfg)],
                                               stdout=log, stderr=subprocess.STDOUT)
        with open(env.log("world"), "w") as log:
            n2.popen([py, "-m", "fastmesh", "world", f"-addr={world_ip}:{world_port}"],
                     env={**os.environ, "POD_IP": world_ip, "TARGET_WORLD": "world"},
                     stdout=log, stderr=subprocess.STDOUT)
        with open(env.log("hello"), "w") as log:
            n1.popen([py, "-m", "fastmesh", "hello", f"-addr={hello_ip}:{hello_port}",
                      "-text=Hello", "-target=world"],
                     env={**os.environ, "POD_IP": hello_ip, "http_proxy": f"{n1.ip}:4140"},
                     stdout=log, stderr=subprocess.STDOUT)
        # The root namespace reaches every node (bridge) and every loopback address.
        for n in (n1, n2, n3):
            for port in PORTS:
                wait_port(n.ip, port, 20.0, env.proxies[n.index], env.log(f"node{n.index}"))
        wait_port(hello_ip, hello_port, 20.0, log=env.log("hello"))
        wait_port(world_ip, world_port, 20.0, log=env.log("world"))
    except BaseException as exc:
        logs = "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted((work / "logs").glob("*.log")))
        mesh.close()
        loop.close()
        if isinstance(exc, Exception):
            raise RuntimeError(f"the e2e mesh did not come up ({mesh.mode} mode): {exc}\n"
                               f"logs:\n{logs}") from exc
        raise
    yield env
    loop.run(ka_relay.stop())
    for origin in (echo, stream, rogue, ka):
        loop.run(origin.stop())
    try:
        mesh.close()
    finally:
        loop.close()


@pytest.fixture(scope="session")
def proxies_alive(mesh_env: MeshEnv):
    """Checks after a test that no fastmesh of the mesh died under it."""
    def check() -> None:
        for i, proc in mesh_env.proxies.items():
            assert proc.poll() is None, (
                f"fastmesh on node {i} exited with {proc.returncode}; log:\n"
                f"{tail(mesh_env.log(f'node{i}'))}")
    return check
