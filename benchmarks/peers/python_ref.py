"""The plain-Python reference proxy (benchmarks/ref_python_proxy.py) as the A/B pair.

The baseline the Cython path must beat by 1.5x: same topology, same features on the
per-request path (keep-alive both legs, LIFO upstream pool, hop-by-hop removal, l5d
headers, TLS 1.3 verified as "linkerd"), written in plain Python on uvloop + httptools.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from . import HOST_HEADER, Launch, Peer, Topology


def _argv_a(topo: Topology) -> list[str]:
    return [
        "--listen", f"{topo.node_a.ip}:{topo.a_port}",
        "--route", f"{HOST_HEADER}={topo.node_b.ip}:{topo.b_port}",
        "--upstream-tls-ca", str(topo.ca_cert),
        "--upstream-tls-name", topo.tls_name,
    ]  # fmt: skip


def _argv_b(topo: Topology) -> list[str]:
    return [
        "--listen", f"{topo.node_b.ip}:{topo.b_port}",
        "--tls-cert", str(topo.cert),
        "--tls-key", str(topo.key),
        "--route", f"{HOST_HEADER}={topo.world_ip}:{topo.world_port}",
    ]  # fmt: skip


class PythonRefPeer(Peer):
    def __init__(self) -> None:
        super().__init__(
            name="python",
            description="plain-Python reference proxy (uvloop + Protocol + httptools)",
            config_ext="args",
            notes=[__doc__.split("\n\n")[1].replace("\n", " ")],
        )

    def missing(self) -> str | None:
        for mod in ("uvloop", "httptools"):
            if importlib.util.find_spec(mod) is None:
                return f"{mod} not importable"
        return None

    def version(self) -> str:
        import httptools
        import uvloop

        return f"uvloop {uvloop.__version__}, httptools {httptools.__version__}"

    def configs(self, topo: Topology) -> dict[str, str]:
        # The "config" of this peer is its command line.
        return {"A": " ".join(_argv_a(topo)) + "\n", "B": " ".join(_argv_b(topo)) + "\n"}

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        pin = topo.pin(topo.proxy_cpus)
        base = [*pin, topo.python, "-m", "benchmarks.ref_python_proxy"]
        return [
            Launch("A", topo.node_a, [*base, *_argv_a(topo)], topo.node_a.ip, topo.a_port, cwd=topo.repo_root),
            Launch("B", topo.node_b, [*base, *_argv_b(topo)], topo.node_b.ip, topo.b_port, cwd=topo.repo_root),
        ]
