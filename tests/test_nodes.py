"""fastmesh.nodes: namespaces (or loopback addresses) as nodes, real TCP across them, cleanup."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fastmesh import nodes as fm_nodes
from fastmesh.nodes import Mesh, NodesError, wait_for_port

pytestmark = pytest.mark.netns

# A bounded TCP server: answers each connection with a line naming itself, then exits
# after 30 s or 50 connections, whichever comes first.
SERVER = textwrap.dedent(
    """
    import socket, sys, time
    ip, port, word = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port)); s.listen(16); s.settimeout(30)
    deadline = time.monotonic() + 30
    for _ in range(50):
        if time.monotonic() > deadline:
            break
        try:
            c, peer = s.accept()
        except socket.timeout:
            break
        c.sendall(f"{word} from {ip} to {peer[0]}\\n".encode()); c.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    data = b""
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip())
    """
)


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    probe = f"fmprobe{os.getpid()}"
    try:
        res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns unusable: {exc}"
    if res.returncode != 0:
        return f"ip netns add failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=10)
    return None


NETNS_SKIP = _netns_usable()
needs_netns = pytest.mark.skipif(NETNS_SKIP is not None, reason=NETNS_SKIP or "")


def _fetch_from_root(ip: str, port: int) -> str:
    with socket.create_connection((ip, port), timeout=5) as c:
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.decode().strip()


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(fm_nodes.ENV_MODE, raising=False)
    monkeypatch.delenv(fm_nodes.ENV_SUBNET, raising=False)


@needs_netns
def test_two_netns_nodes_reach_each_other_and_root_then_vanish():
    with Mesh(2) as mesh:
        assert mesh.mode == "netns", mesh.fallback_reason
        n1, n2 = mesh.node(1), mesh.node(2)
        net = str(mesh.subnet.network_address).rsplit(".", 2)[0]  # e.g. "10.77"
        assert (n1.ip, n2.ip, mesh.root_ip) == (f"{net}.1.1", f"{net}.2.1", f"{net}.0.1")
        assert n1.netns != n2.netns and n1.exec_prefix == ["ip", "netns", "exec", n1.netns]
        names = {n1.netns, n2.netns, mesh.bridge}
        assert {n1.netns, n2.netns} <= _netns_names()
        assert mesh.bridge in _links()

        pod = n2.add_pod_ip()
        assert pod == f"{net}.2.10" and n2.add_pod_ip() == f"{net}.2.11"
        server = n2.popen([sys.executable, "-c", SERVER, pod, "7001", "pong"])
        n2.wait_for_port(7001, 10, ip=pod)

        # From node 1's namespace: the line names node 1's address as the peer.
        res = n1.run([sys.executable, "-c", CLIENT, pod, "7001"], capture_output=True, text=True, timeout=20)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"pong from {pod} to {n1.ip}"
        # From the root namespace, through the bridge: the peer is the bridge address.
        assert _fetch_from_root(pod, 7001) == f"pong from {pod} to {mesh.root_ip}"
        # Node 1 itself is reachable from root as well (a server bound to its node address).
        s1 = n1.popen([sys.executable, "-c", SERVER, n1.ip, "7002", "hi"])
        wait_for_port(n1.ip, 7002, 10)
        assert _fetch_from_root(n1.ip, 7002) == f"hi from {n1.ip} to {mesh.root_ip}"
        # lo is up inside the node: 127.0.0.1 there is the node's own loopback.
        s3 = n2.popen([sys.executable, "-c", SERVER, "127.0.0.1", "7003", "local"])
        n2.wait_for_port(7003, 10, ip="127.0.0.1")
        res = n2.run([sys.executable, "-c", CLIENT, "127.0.0.1", "7003"], capture_output=True, text=True, timeout=20)
        assert res.stdout.strip() == "local from 127.0.0.1 to 127.0.0.1"
        # A real HTTP server on the pod address, fetched with curl from the root namespace.
        web = n2.popen([sys.executable, "-m", "http.server", "--bind", pod, "7006"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        n2.wait_for_port(7006, 10, ip=pod)
        if shutil.which("curl"):
            res = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{remote_ip}",
                                  f"http://{pod}:7006/"], capture_output=True, text=True, timeout=20)
            assert res.stdout == f"200 {pod}", res.stderr
        pids = [p.pid for p in (server, s1, s3, web)]
        tag = mesh.tag
    # Everything it created is gone, and the servers (still running) were killed.
    assert not (names & (_netns_names() | _links()))
    assert not any(name.startswith(tag) for name in _links() | _netns_names())
    assert not any(_pid_alive(pid) for pid in pids)
    assert not Path(fm_nodes.DEFAULT_STATE_DIR, f"{tag}.json").exists()


@needs_netns
def test_cleanup_after_an_exception_inside_the_block():
    with pytest.raises(ZeroDivisionError):
        with Mesh(3) as mesh:
            tag = mesh.tag
            proc = mesh.node(3).popen([sys.executable, "-c", "import time; time.sleep(60)"])
            1 / 0
    assert not any(name.startswith(tag) for name in _links() | _netns_names())
    assert proc.poll() is not None


@needs_netns
def test_two_meshes_at_once_get_distinct_names_and_subnets():
    with Mesh(1) as a, Mesh(1) as b:
        assert a.mode == b.mode == "netns"
        assert a.tag != b.tag and a.subnet != b.subnet and not a.subnet.overlaps(b.subnet)
        server = b.node(1).popen([sys.executable, "-c", SERVER, b.node(1).ip, "7004", "b"])
        wait_for_port(b.node(1).ip, 7004, 10)
        assert _fetch_from_root(b.node(1).ip, 7004).startswith("b from")
        assert server.poll() is None


@needs_netns
def test_stale_leftovers_of_a_killed_creator_are_removed_but_foreign_ones_kept():
    # A creator that dies by SIGKILL, so it cannot clean up after itself.
    code = textwrap.dedent(
        """
        import sys, time
        from fastmesh.nodes import Mesh
        m = Mesh(1, mode="netns")
        print(m.tag, m.node(1).netns, m.bridge, flush=True)
        time.sleep(60)
        """
    )
    creator = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        tag, ns, bridge = creator.stdout.readline().split()
    finally:
        creator.kill()
        creator.wait(timeout=10)
    assert ns in _netns_names() and bridge in _links()
    # Looks like ours (prefix, dead PID) but no marker of ours lists it: must survive.
    foreign = "fm4194000zn1"
    subprocess.run(["ip", "netns", "add", foreign], check=True, timeout=10)
    try:
        with Mesh(1) as mesh:
            assert mesh.mode == "netns"
            assert ns not in _netns_names() and bridge not in _links()
            assert foreign in _netns_names()
        assert not Path(fm_nodes.DEFAULT_STATE_DIR, f"{tag}.json").exists()
    finally:
        subprocess.run(["ip", "netns", "delete", foreign], timeout=10)


@needs_netns
def test_forced_subnet_that_clashes_fails_in_netns_mode_and_leaves_nothing(monkeypatch):
    before = _links() | _netns_names()
    monkeypatch.setenv(fm_nodes.ENV_SUBNET, "127.0.0.0/16")  # overlaps lo's 127.0.0.0/8
    with pytest.raises(NodesError, match="overlaps"):
        Mesh(2, mode="netns")
    # In auto mode the same failure falls back to loopback, saying why.
    with Mesh(2) as mesh:
        assert mesh.mode == "loopback" and "overlaps" in mesh.fallback_reason
    assert _links() | _netns_names() == before


def test_forced_loopback_fallback(monkeypatch):
    monkeypatch.setenv(fm_nodes.ENV_MODE, "loopback")
    before = _links()
    with Mesh(2) as mesh:
        assert mesh.mode == "loopback" and "forced" in mesh.fallback_reason
        n1, n2 = mesh.node(1), mesh.node(2)
        assert (n1.ip, n2.ip) == ("127.0.0.2", "127.0.0.3")
        assert n1.exec_prefix == [] and n1.netns is None
        assert n2.add_pod_ip() == n2.ip  # pods share the node address
        server = n2.popen([sys.executable, "-c", SERVER, n2.ip, "7005", "lo"])
        n1.wait_for_port(7005, 10, ip=n2.ip)
        res = n1.run([sys.executable, "-c", CLIENT, n2.ip, "7005"], capture_output=True, text=True, timeout=20)
        # The client binds no address, so the kernel picks 127.0.0.1 as its source.
        assert res.stdout.strip() == f"lo from {n2.ip} to 127.0.0.1"
        assert _fetch_from_root(n2.ip, 7005).startswith("lo from 127.0.0.3")
    assert server.poll() is not None
    assert _links() == before


def test_stop_kills_one_process_and_its_children_by_pid(monkeypatch):
    monkeypatch.setenv(fm_nodes.ENV_MODE, "loopback")
    code = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(c.pid, flush=True); time.sleep(60)"
    with Mesh(1) as mesh:
        proc = mesh.node(1).popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        child = int(proc.stdout.readline())
        other = mesh.node(1).popen([sys.executable, "-c", "import time; time.sleep(60)"])
        t0 = time.monotonic()
        mesh.stop(proc)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == -signal.SIGTERM
        deadline = time.monotonic() + 5
        while _pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(child)
        assert other.poll() is None and mesh.processes == [other]
    assert other.poll() is not None


def test_wait_for_port_times_out_on_a_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=str(port)):
            wait_for_port("127.0.0.1", port, timeout=0.3)
        assert time.monotonic() - t0 < 3
