"""The world backend every peer forwards to: a fixed 12-byte ``Hello world!``.

nginx when installed (worker_processes 1, keep-alive, access log off: the cheapest
backend here, so the proxies dominate); otherwise fastmesh's own world app
(``python -m fastmesh.apps.helloworld -text "Hello world"``, same body, uvloop+httptools).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from . import Launch, Topology
from .nginx import nginx_argv, nginx_binary, nginx_version, rundir_for, world_config


class World:
    """Which backend to run and how; `kind` is "nginx" or "fastmesh-helloworld"."""

    def __init__(self, prefer: str = "auto") -> None:
        if prefer not in ("auto", "nginx", "fastmesh"):
            raise ValueError(f"world backend {prefer!r}: auto, nginx or fastmesh")
        if prefer in ("auto", "nginx") and nginx_binary():
            self.kind = "nginx"
        elif prefer == "nginx":
            raise RuntimeError("world backend nginx requested but nginx is not installed")
        elif importlib.util.find_spec("fastmesh.apps.helloworld") is not None:
            self.kind = "fastmesh-helloworld"
        else:
            raise RuntimeError("no world backend: install nginx-light or fastmesh.apps.helloworld")

    def version(self) -> str:
        return nginx_version() if self.kind == "nginx" else "fastmesh.apps.helloworld"

    def config(self, topo: Topology) -> str:
        if self.kind == "nginx":
            return world_config(topo.world_ip, topo.world_port, rundir_for(topo, "world"))
        return " ".join(self._helloworld_args(topo)) + "\n"

    def _helloworld_args(self, topo: Topology) -> list[str]:
        # -idle-timeout 0: keep benchmark connections open however long a run idles.
        return ["-addr", f"{topo.world_ip}:{topo.world_port}", "-text", "Hello world", "-idle-timeout", "0"]

    def launch(self, topo: Topology, config_path: Path, cpus: str | None) -> Launch:
        pin = topo.pin(cpus)
        if self.kind == "nginx":
            argv = [*pin, *nginx_argv(config_path)]
            return Launch("world", topo.node_b, argv, topo.world_ip, topo.world_port)
        argv = [*pin, topo.python, "-m", "fastmesh.apps.helloworld", *self._helloworld_args(topo)]
        return Launch("world", topo.node_b, argv, topo.world_ip, topo.world_port, cwd=topo.repo_root)
