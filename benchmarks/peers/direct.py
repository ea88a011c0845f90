"""direct: the load goes straight to world, no proxy (the floor every ratio is read against).

As in style-anchors §5, world then runs on the proxies' CPU (1) and the load on CPU 0, so
the baseline is not starved by sharing a core with the load generator.
"""

from __future__ import annotations

from pathlib import Path

from . import Launch, Peer, Topology


class DirectPeer(Peer):
    def __init__(self) -> None:
        super().__init__(
            name="direct",
            description="no proxy: load -> world across the bridge",
            roles=(),
            notes=[__doc__.split("\n\n")[1].replace("\n", " ")],
        )

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        return []

    def entry(self, topo: Topology) -> tuple[str, int]:
        return topo.world_ip, topo.world_port
