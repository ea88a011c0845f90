"""HAProxy (Debian) as the A/B proxy pair (optional peer: only with ``--peers ...,haproxy``).

As HAProxy's configuration manual describes for an HTTP proxy to a TLS server: ``mode
http`` with ``option http-keep-alive`` and ``http-reuse always`` (idle server connections
shared between client connections), the server line verifying the certificate
(``ssl verify required ca-file ... verifyhost linkerd``) and sending SNI ``linkerd``,
TLS 1.3 only on both sides. One thread (``nbthread 1``), no logging. B binds :4141 with
``ssl crt`` (HAProxy wants certificate and key in one PEM file, written next to the config).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import Launch, Peer, Topology


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (shutil.which("/usr/sbin/haproxy"))


def _global_defaults() -> str:
    return """\
global
    nbthread 1
    maxconn 8000
    ssl-server-verify required

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
"""


def proxy_a_config(topo: Topology) -> str:
    return (
        _global_defaults()
        + f"""
frontend outgoing
    bind {topo.node_a.ip}:{topo.a_port}
    default_backend incoming_b

backend incoming_b
    server b {topo.node_b.ip}:{topo.b_port} ssl verify required ca-file {topo.ca_cert} verifyhost {topo.tls_name} sni str({topo.tls_name}) ssl-min-ver TLSv1.3
"""
    )


def proxy_b_config(topo: Topology, combined_pem: Path) -> str:
    return (
        _global_defaults()
        + f"""
frontend incoming
    bind {topo.node_b.ip}:{topo.b_port} ssl crt {combined_pem} ssl-min-ver TLSv1.3
    default_backend world

backend world
    server w {topo.world_ip}:{topo.world_port}
"""
    )


class HaproxyPeer(Peer):
    def __init__(self) -> None:
        super().__init__(
            name="haproxy",
            description="HAProxy nbthread 1, mode http, http-reuse always, TLS server line",
            config_ext="cfg",
            notes=[__doc__.split("\n\n")[1].replace("\n", " ")],
        )

    def missing(self) -> str | None:
        return None if haproxy_binary() else "haproxy not installed (apt-get install haproxy)"

    def version(self) -> str:
        binary = haproxy_binary()
        if not binary:
            return ""
        res = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        first = res.stdout.splitlines()[0] if res.stdout else ""
        return first.replace("HAProxy version ", "").split(" - ")[0]

    def _combined(self, topo: Topology) -> Path:
        path = topo.workdir / "haproxy-mesh.pem"
        if not path.exists():
            path.write_bytes(topo.cert.read_bytes() + topo.key.read_bytes())
            path.chmod(0o600)
        return path

    def configs(self, topo: Topology) -> dict[str, str]:
        return {"A": proxy_a_config(topo), "B": proxy_b_config(topo, self._combined(topo))}

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        binary = haproxy_binary() or "haproxy"
        pin = topo.pin(topo.proxy_cpus)
        # -db: stay in the foreground, no daemon, so the PID we hold is the proxy.
        return [
            Launch("A", topo.node_a, [*pin, binary, "-db", "-f", str(config_paths["A"])], topo.node_a.ip, topo.a_port),
            Launch("B", topo.node_b, [*pin, binary, "-db", "-f", str(config_paths["B"])], topo.node_b.ip, topo.b_port),
        ]
