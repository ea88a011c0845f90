"""nginx (Debian's nginx-light) as world backend and as the A/B proxy pair.

Configured as nginx's documentation recommends for a keep-alive reverse proxy to an
HTTPS upstream: ``upstream { keepalive N; }`` with ``proxy_http_version 1.1`` and an
empty ``Connection`` header (ngx_http_upstream_module, "keepalive"), certificate
verification with ``proxy_ssl_verify``/``proxy_ssl_trusted_certificate``, the name
checked and sent as SNI with ``proxy_ssl_name``/``proxy_ssl_server_name``, TLS session
reuse on. One worker process, access log off. ``keepalive_requests`` is raised from its
default (1000 in 1.22) on both legs so a benchmark connection is not closed mid-run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import HELLO_BODY, Launch, Peer, Topology

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


def nginx_binary() -> str | None:
    for cand in NGINX_CANDIDATES:
        path = shutil.which(cand)
        if path:
            return path
    return None


def nginx_version() -> str:
    binary = nginx_binary()
    if not binary:
        return ""
    res = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (res.stderr or res.stdout).strip().replace("nginx version: ", "")


def _main_block(rundir: Path) -> str:
    """Process-level settings shared by every nginx we start (files under `rundir`)."""
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {rundir}/nginx.pid;
error_log {rundir}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
"""


def _http_common(rundir: Path) -> str:
    tmp = rundir / "tmp"
    return f"""\
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
"""


def world_config(ip: str, port: int, rundir: Path) -> str:
    """world: answers every request with the 12-byte "Hello world!" (keep-alive)."""
    body = HELLO_BODY.decode()
    return (
        _main_block(rundir)
        + "http {\n"
        + _http_common(rundir)
        + f"""\
    server {{
        listen {ip}:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""
    )


def proxy_a_config(topo: Topology, rundir: Path) -> str:
    """Outgoing: plain HTTP in on :4140, TLS 1.3 to B verified as "linkerd"."""
    return (
        _main_block(rundir)
        + "http {\n"
        + _http_common(rundir)
        + f"""\
    upstream incoming_b {{
        server {topo.node_b.ip}:{topo.b_port};
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {topo.node_a.ip}:{topo.a_port} backlog=4096;
        location / {{
            proxy_pass https://incoming_b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_trusted_certificate {topo.ca_cert};
            proxy_ssl_name {topo.tls_name};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"""
    )


def proxy_b_config(topo: Topology, rundir: Path) -> str:
    """Incoming: TLS 1.3 in on :4141 with the mesh certificate, plain HTTP to world."""
    return (
        _main_block(rundir)
        + "http {\n"
        + _http_common(rundir)
        + f"""\
    upstream world {{
        server {topo.world_ip}:{topo.world_port};
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {topo.node_b.ip}:{topo.b_port} ssl backlog=4096;
        ssl_certificate {topo.cert};
        ssl_certificate_key {topo.key};
        ssl_protocols TLSv1.3;
        ssl_session_cache shared:mesh:1m;
        location / {{
            proxy_pass http://world;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""
    )


def rundir_for(topo: Topology, name: str) -> Path:
    d = topo.workdir / name
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    # Workers run as an unprivileged user and create their temp dirs here.
    for p in (d, d / "tmp"):
        p.chmod(0o777)
    return d


def nginx_argv(config_path: Path) -> list[str]:
    binary = nginx_binary() or "nginx"
    # -e: the early error log goes to stderr instead of the compiled-in path.
    return [binary, "-c", str(config_path), "-e", "stderr", "-p", str(config_path.parent)]


class NginxPeer(Peer):
    def __init__(self) -> None:
        super().__init__(
            name="nginx",
            description="nginx, one worker each: proxy_pass https with keepalive upstream",
            notes=[__doc__.split("\n\n")[1].replace("\n", " ")],
        )

    def missing(self) -> str | None:
        return None if nginx_binary() else "nginx not installed (apt-get install nginx-light)"

    def version(self) -> str:
        return nginx_version()

    def configs(self, topo: Topology) -> dict[str, str]:
        return {
            "A": proxy_a_config(topo, rundir_for(topo, "nginx-A")),
            "B": proxy_b_config(topo, rundir_for(topo, "nginx-B")),
        }

    def launches(self, topo: Topology, config_paths: dict[str, Path]) -> list[Launch]:
        pin = topo.pin(topo.proxy_cpus)
        return [
            Launch("A", topo.node_a, [*pin, *nginx_argv(config_paths["A"])], topo.node_a.ip, topo.a_port),
            Launch("B", topo.node_b, [*pin, *nginx_argv(config_paths["B"])], topo.node_b.ip, topo.b_port),
        ]
