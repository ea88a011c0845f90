"""fastmesh as the A/B pair: two `fastmesh run CONFIG` processes with linkerd-1.x configs.

A is the outgoing router (label ``outgoing``, :4140, ``/svc/world`` delegated to B's
:4141 over TLS verified as ``linkerd`` against the mesh CA); B is the incoming router
(label ``incoming``, :4141 with the mesh certificate, ``/svc/world`` to world). These are
the linkerd DaemonSet example's two routers with the namers replaced by ``/$/inet``, so
the benchmark measures the data path, not service discovery. Admin on 9990 of each node
(distinct ports in loopback mode). One process each.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from . import HOST_HEADER, Launch, Peer, Topology


def _fastmesh_cmd(python: str) -> list[str]:
    """The `fastmesh` console script next to `python`, else `python -m fastmesh.cli`."""
    script = Path(python).parent / "fastmesh"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("fastmesh")
    if found and Path(found).parent == Path(python).parent:
        return [found]
    return [python, "-m", "fastmesh.cli"]


def proxy_a_config(topo: Topology) -> str:
    return f"""\
# fastmesh A: outgoing router (apps on node {topo.node_a.name} send plain HTTP here)
admin:
  ip: {topo.node_a.ip}
  port: {topo.admin_a}
routers:
- protocol: http
  label: outgoing
  dtab: /svc/{HOST_HEADER} => /$/inet/{topo.node_b.ip}/{topo.b_port};
  servers:
  - ip: {topo.node_a.ip}
    port: {topo.a_port}
  client:
    tls:
      commonName: {topo.tls_name}
      trustCerts:
      - {topo.ca_cert}
"""


def proxy_b_config(topo: Topology) -> str:
    return f"""\
# fastmesh B: incoming router (peers' outgoing routers connect here over TLS)
admin:
  ip: {topo.node_b.ip}
  port: {topo.admin_b}
routers:
- protocol: http
  label: incoming
  dtab: /svc/{HOST_HEADER} => /$/inet/{topo.world_ip}/{topo.world_port};
  servers:
  - ip: {topo.node_b.ip}
    port: {topo.b_port}
    tls:
      certPath: {topo.cert}
      keyPath: {topo.key}
"""


class FastmeshPeer(Peer):
    def __init__(self) -> None:
        super().__init__(
            name="fastmesh",
            description="fastmesh run: outgoing router A, incoming router B (one process each)",
            config_ext="yaml",
            notes=[__doc__.split("\n\n")[1].replace("\n", " ")],
        )

    def missing(self) -> str | None:
        if importlib.util.find_spec("fastmesh.cli") is None:
            return "fastmesh.cli not present yet (`fastmesh run` is what this peer starts)"
        return None

    def version(self) -> str:
        import fastmesh

        return getattr(fastmesh, "__version__", "")

    def configs(self, topo: Topology) -> dict[str, str]:
        return {"A": proxy_a_config(topo), "B": proxy_b_config(topo)}

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        pin = topo.pin(topo.proxy_cpus)
        cmd = _fastmesh_cmd(topo.python or sys.executable)
        return [
            Launch("A", topo.node_a, [*pin, *cmd, "run", str(config_paths["A"])], topo.node_a.ip, topo.a_port, cwd=topo.repo_root),
            Launch("B", topo.node_b, [*pin, *cmd, "run", str(config_paths["B"])], topo.node_b.ip, topo.b_port, cwd=topo.repo_root),
        ]
