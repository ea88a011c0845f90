"""The systems under test: what each peer runs, with which config, on which node.

Topology (same for every proxy peer)::

    load ──plain, keep-alive──▶ proxy A :4140 ──TLS 1.3, verified "linkerd"──▶ proxy B :4141 ──plain──▶ world
    (node 1, CPU 0)             (node 1, CPU 1)                                 (node 2, CPU 1)          (node 2 pod IP, CPU 0)

``direct`` sends the load straight to world (world then gets CPU 1, as in style-anchors §5).
A peer is a :class:`Peer`: it says whether it can run here (and why not), renders its
configs as text (printed with the results) and lists the processes to start. Config
generators are pure functions of a :class:`Topology`, so they can be read and tested
without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastmesh.nodes import Node

HOST_HEADER = "world"  # the outgoing router names requests /svc/<Host>
HELLO_BODY = b"Hello world!"  # what world answers: 12 bytes


@dataclass
class Topology:
    """Where every part of one benchmark session runs, and the files they share."""

    node_a: "Node"  # load generator + proxy A (outgoing)
    node_b: "Node"  # proxy B (incoming) + world
    world_ip: str  # a pod address on node B (the node address in loopback mode)
    world_port: int
    ca_cert: Path  # mesh CA (A trusts it)
    cert: Path  # B's certificate, name "linkerd"
    key: Path  # B's key (PKCS#8 PEM)
    workdir: Path  # configs, logs, temp dirs of this run
    repo_root: Path  # for `python -m benchmarks...` inside the nodes
    python: str  # interpreter for Python peers
    proxy_cpus: str | None  # taskset list for proxies (None: no pinning)
    load_cpus: str | None  # taskset list for load generator and world
    a_port: int = 4140
    b_port: int = 4141
    admin_a: int = 9990
    admin_b: int = 9990  # distinct from admin_a in loopback mode
    tls_name: str = "linkerd"

    @staticmethod
    def pin(cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus] if cpus else []


@dataclass
class Launch:
    """One process to start for a peer."""

    role: str  # "A", "B" or "world"
    node: "Node"
    argv: list[str]
    ip: str  # where it listens (checked before measuring)
    port: int
    cwd: Path | None = None
    env: dict[str, str] | None = None
    startup_timeout: float = 20.0


@dataclass
class Peer:
    """Base of every peer; subclasses fill in the three methods."""

    name: str
    description: str
    roles: tuple[str, ...] = ("A", "B")
    config_ext: str = "conf"
    notes: list[str] = field(default_factory=list)  # how it was configured, and why

    def missing(self) -> str | None:
        """Why this peer cannot run here (None when it can)."""
        return None

    def version(self) -> str:
        return ""

    def configs(self, topo: Topology) -> dict[str, str]:
        """Config text per role ({"A": ..., "B": ...})."""
        return {}

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        raise NotImplementedError

    def entry(self, topo: Topology) -> tuple[str, int]:
        """Where the load goes."""
        return topo.node_a.ip, topo.a_port


def all_peers() -> dict[str, Peer]:
    """Every peer the harness knows, by name, in the default order of a run."""
    from .direct import DirectPeer
    from .envoy import EnvoyPeer
    from .fastmesh import FastmeshPeer
    from .haproxy import HaproxyPeer
    from .nginx import NginxPeer
    from .python_ref import PythonRefPeer

    peers = [FastmeshPeer(), EnvoyPeer(), NginxPeer(), PythonRefPeer(), DirectPeer(), HaproxyPeer()]
    return {p.name: p for p in peers}
