"""Nodes on one machine: network namespaces (or loopback addresses) for demo, tests, bench.

A fastmesh deployment is one proxy per node, and the interesting path crosses nodes:
app -> outgoing router on node A -> TLS -> incoming router on node B -> pod. To run that
on one machine, :class:`Mesh` creates N "nodes":

* **netns mode** (root and ``ip netns`` works): node i is a network namespace with a veth
  pair into a bridge in the root namespace. Node i has ``<net>.i.1`` on its veth, pods get
  extra addresses ``<net>.i.(10+k)``, and all of them share one /16 L2 segment, so nodes
  reach each other and the root namespace (the bridge has ``<net>.0.1``) reaches every
  node. ``<net>`` is ``10.77`` unless that clashes with an existing route (then the next
  free ``10.x``) or ``FASTMESH_NODES_SUBNET`` says otherwise.
* **loopback mode** (not root, ``ip netns add`` failed, or ``FASTMESH_NODES_MODE=loopback``):
  node i is ``127.0.0.(i+1)``; pods share the node address and differ by port.

Everything created is recorded in a marker file (``/run/fastmesh-nodes/<tag>.json``) and
removed by :meth:`Mesh.close`, also after failures. Stale leftovers of a crashed run are
removed only when a marker file of ours lists them AND its creating process is gone; no
other namespace or interface is ever touched. Processes started with :meth:`Node.popen`
are killed by PID (and their own process group) at close.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Mesh", "Nodes", "Node", "NodesError", "wait_for_port"]

ENV_MODE = "FASTMESH_NODES_MODE"  # "auto" (default), "netns" (required) or "loopback"
ENV_SUBNET = "FASTMESH_NODES_SUBNET"  # e.g. "10.77.0.0/16"; must be a free /16
ENV_STATE_DIR = "FASTMESH_NODES_STATE_DIR"  # where marker files live

DEFAULT_STATE_DIR = "/run/fastmesh-nodes"
# Second octets tried in order when no subnet is forced; 10.77 first (the documented one).
_CANDIDATE_OCTETS = tuple(range(77, 100))
_POD_HOST_BASE = 10  # pod k of node i is <net>.i.(10+k)
_MAX_PODS_PER_NODE = 240
_IP_TIMEOUT = 20.0  # seconds for any single `ip` command
# Names we create: fm<pid><letter> + n<i> (namespace) | br (bridge) | h<i> (veth, host side).
_TAG_RE = re.compile(r"^fm(\d+)[a-z]$")
_OUR_NAME_RE = re.compile(r"^fm\d+[a-z](?:n\d+|br|h\d+)$")
_LINK_ALIAS = "fastmesh-nodes"

_tag_counter = 0


class NodesError(RuntimeError):
    """Creating or using the nodes failed (with the command and its error output)."""


def _run_ip(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run one `ip` command, bounded in time; raise NodesError with stderr on failure."""
    cmd = ["ip", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=_IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NodesError(f"{' '.join(cmd)}: {exc}") from exc
    if check and res.returncode != 0:
        raise NodesError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _proc_start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot), or None if it is not running.

    Together with the PID this identifies a process across PID reuse."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 overall: starttime


def _creator_alive(pid: int, start_time: int | None) -> bool:
    current = _proc_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def _existing_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination in any routing table plus every configured address."""
    nets: list[ipaddress.IPv4Network] = []
    for args in (["-j", "-4", "route", "show", "table", "all"], ["-j", "-4", "addr", "show"]):
        res = _run_ip(args, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            continue
        try:
            data = json.loads(res.stdout)
        except ValueError:
            continue
        for entry in data:
            cands: list[str] = []
            if "dst" in entry:
                cands.append(entry["dst"])
            for info in entry.get("addr_info", ()):
                cands.append(f"{info['local']}/{info.get('prefixlen', 32)}")
            for cand in cands:
                if cand in ("default", "0.0.0.0/0"):
                    continue  # a default route clashes with nothing specific
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.IPv4Network(cand, strict=False))
    return nets


def _pick_subnet(forced: str | None) -> ipaddress.IPv4Network:
    existing = _existing_ipv4_networks()
    if forced:
        net = ipaddress.IPv4Network(forced, strict=False)
        if net.prefixlen != 16:
            raise NodesError(f"{ENV_SUBNET}={forced}: must be a /16 (node i is <a.b>.i.1)")
        clash = [str(n) for n in existing if n.overlaps(net)]
        if clash:
            raise NodesError(f"{ENV_SUBNET}={forced} overlaps existing routes/addresses {clash}")
        return net
    for octet in _CANDIDATE_OCTETS:
        net = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if not any(n.overlaps(net) for n in existing):
            return net
    raise NodesError(
        f"no free 10.x.0.0/16 among 10.{_CANDIDATE_OCTETS[0]}..10.{_CANDIDATE_OCTETS[-1]}; "
        f"set {ENV_SUBNET}"
    )


def _kill_by_pid(proc: subprocess.Popen, grace: float) -> None:
    """Stop one process we started: SIGTERM, wait `grace` seconds, then SIGKILL.

    Processes are started in their own session, so their process group id is their PID;
    the group is signalled too so that children they forked (nginx workers) go with them.
    """
    own_group = getattr(proc, "_fastmesh_own_group", False)

    def signal_all(sig: int) -> None:
        if proc.returncode is None:
            # Not reaped yet, so neither the PID nor the group id can have been reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if own_group:
                    os.killpg(proc.pid, sig)
                else:
                    os.kill(proc.pid, sig)
        elif own_group:
            # Reaped: members still in its group (orphaned children) keep the group id
            # from being reused, so any process with that process group is ours.
            for pid in _group_members(proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    if proc.poll() is None:
        signal_all(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    signal_all(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _group_members(pgid: int) -> list[int]:
    """PIDs whose process group is `pgid` (read from /proc, bounded by the process count)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[2]) == pgid:  # field 5: pgrp
            members.append(int(name))
    return members


@dataclass
class Node:
    """One node: a network namespace (netns mode) or a loopback address (loopback mode)."""

    index: int  # 1-based
    name: str  # the namespace name in netns mode, "node<i>" in loopback mode
    ip: str  # the node's own address: where its fastmesh listens
    netns: str | None  # None in loopback mode
    pod_ips: list[str] = field(default_factory=list)
    _mesh: Any = field(default=None, repr=False)
    _ifname: str = field(default="eth0", repr=False)

    @property
    def mesh(self) -> "Mesh":
        """The mesh this node belongs to (to stop a process it started: mesh.stop)."""
        return self._mesh

    @property
    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside this node (empty in loopback mode)."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start `argv` inside this node; the mesh kills it by PID at close.

        Keyword arguments go to subprocess.Popen; `start_new_session` defaults to True so a
        terminal's Ctrl-C reaches only the harness, which then stops everything in order."""
        return self._mesh._popen(self, list(argv), **kw)

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess:
        """Run `argv` inside this node to completion (bounded by `timeout`)."""
        return subprocess.run([*self.exec_prefix, *argv], timeout=timeout, **kw)

    def add_pod_ip(self) -> str:
        """Add one more address on this node for a "pod" and return it.

        In loopback mode pods share the node address (they must use distinct ports)."""
        return self._mesh._add_pod_ip(self)

    def wait_for_port(self, port: int, timeout: float = 10.0, ip: str | None = None) -> None:
        """Wait until a TCP connect to `ip` (default: the node's address) succeeds from
        inside this node."""
        wait_for_port(ip or self.ip, port, timeout, node=self)


_WAIT_CODE = r"""
import socket, sys, time
ip, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
err = None
while time.monotonic() < deadline:
    try:
        socket.create_connection((ip, port), timeout=0.5).close()
        sys.exit(0)
    except OSError as exc:
        err = exc
        time.sleep(0.02)
print(err, file=sys.stderr)
sys.exit(1)
"""


def wait_for_port(ip: str, port: int, timeout: float = 10.0, node: Node | None = None) -> None:
    """Wait until `ip:port` accepts a TCP connection; raise TimeoutError otherwise.

    With a netns `node`, the connect is made from inside that namespace (a short-lived
    `ip netns exec` Python subprocess), so addresses only visible there (127.0.0.1 of the
    node, say) can be checked too."""
    if node is not None and node.netns:
        argv = [*node.exec_prefix, sys.executable, "-c", _WAIT_CODE, ip, str(port), str(timeout)]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{ip}:{port} in {node.netns}: check did not finish") from exc
        if res.returncode != 0:
            raise TimeoutError(
                f"{ip}:{port} in {node.netns} not accepting after {timeout}s: {res.stderr.strip()}"
            )
        return
    deadline = time.monotonic() + timeout
    err: OSError | None = None
    import socket  # local: only this branch needs it

    while time.monotonic() < deadline:
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return
        except OSError as exc:
            err = exc
            time.sleep(0.02)
    raise TimeoutError(f"{ip}:{port} not accepting after {timeout}s: {err}")


class Mesh:
    """N nodes on this machine; a context manager that removes all it created on exit.

    ``mode``: "auto" (netns when possible, else loopback), "netns" (fail if impossible) or
    "loopback"; the ``FASTMESH_NODES_MODE`` environment variable overrides "auto".
    ``subnet``: a /16 to use in netns mode (default: ``FASTMESH_NODES_SUBNET`` or the first
    free of 10.77/16, 10.78/16, ...).
    """

    def __init__(
        self,
        count: int = 2,
        *,
        mode: str = "auto",
        subnet: str | None = None,
        state_dir: str | None = None,
    ) -> None:
        if not 1 <= count <= 250:
            raise ValueError(f"count={count}: between 1 and 250 nodes")
        if mode == "auto":
            mode = os.environ.get(ENV_MODE, "auto") or "auto"
        if mode not in ("auto", "netns", "loopback"):
            raise ValueError(f"mode={mode!r}: one of auto, netns, loopback")
        self.nodes: list[Node] = []
        self.mode = "loopback"
        self.fallback_reason: str | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.root_ip = "127.0.0.1"  # address of the root namespace as seen from the nodes
        self.bridge: str | None = None
        self._procs: list[subprocess.Popen] = []
        self._created_netns: list[str] = []
        self._created_links: list[str] = []
        self._pods_added: dict[int, int] = {}
        self._closed = False
        self._state_dir = Path(state_dir or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)
        self._marker: Path | None = None
        global _tag_counter
        # Unique per process and per Mesh in it; short enough for 15-char interface names.
        self.tag = f"fm{os.getpid()}{chr(ord('a') + _tag_counter % 26)}"
        _tag_counter += 1

        # Registered before anything is created so an interpreter exit still cleans up.
        atexit.register(_close_at_exit, weakref.ref(self))
        if mode in ("auto", "netns"):
            reason = self._netns_unavailable_reason()
            if reason is None:
                try:
                    self._setup_netns(count, subnet or os.environ.get(ENV_SUBNET))
                    self.mode = "netns"
                except BaseException as exc:
                    self._teardown_netns()
                    self.nodes = []
                    if mode == "netns" or not isinstance(exc, NodesError):
                        raise
                    reason = str(exc)
            if reason is not None:
                if mode == "netns":
                    raise NodesError(f"netns mode requested but unavailable: {reason}")
                self.fallback_reason = reason
        else:
            self.fallback_reason = f"forced by mode=loopback ({ENV_MODE})"
        if self.mode == "loopback":
            self._setup_loopback(count)

    # -- public -----------------------------------------------------------------------

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def node(self, index: int) -> Node:
        """Node by its 1-based index."""
        return self.nodes[index - 1]

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> int | None:
        """Stop one process started by :meth:`Node.popen` now (by PID); return its exit code."""
        _kill_by_pid(proc, grace)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)
        return proc.returncode

    @property
    def processes(self) -> list[subprocess.Popen]:
        """Processes started in the nodes and not yet stopped."""
        return list(self._procs)

    def close(self) -> None:
        """Kill the processes started in the nodes (by PID), then remove the namespaces,
        veths and bridge this mesh created. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in reversed(self._procs):
            try:
                _kill_by_pid(proc, grace=3.0)
            except Exception as exc:  # keep going: the namespaces must still go
                errors.append(f"pid {proc.pid}: {exc}")
        self._procs.clear()
        if self.mode == "netns" or self._created_netns or self._created_links:
            errors.extend(self._teardown_netns())
        if errors:
            raise NodesError("cleanup incomplete: " + "; ".join(errors))

    # -- netns mode -------------------------------------------------------------------

    @staticmethod
    def _netns_unavailable_reason() -> str | None:
        if os.geteuid() != 0:
            return "not root"
        if shutil.which("ip") is None:
            return "`ip` (iproute2) not found"
        return None

    def _setup_netns(self, count: int, forced_subnet: str | None) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self._state_dir / "lock"
        with open(lock_path, "w") as lock:
            # Serialises subnet choice and creation between concurrent meshes.
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cleanup_stale()
            self.subnet = _pick_subnet(forced_subnet)
            self._write_marker()
            base = self.subnet.network_address.packed
            prefix = f"{base[0]}.{base[1]}"
            bridge = f"{self.tag}br"
            _run_ip(["link", "add", bridge, "type", "bridge"])
            self._created_links.append(bridge)
            self._write_marker()
            _run_ip(["link", "set", bridge, "alias", _LINK_ALIAS])
            _run_ip(["addr", "add", f"{prefix}.0.1/16", "dev", bridge])
            _run_ip(["link", "set", bridge, "up"])
            self.bridge = bridge
            self.root_ip = f"{prefix}.0.1"
            for i in range(1, count + 1):
                ns = f"{self.tag}n{i}"
                host_if = f"{self.tag}h{i}"
                _run_ip(["netns", "add", ns])
                self._created_netns.append(ns)
                self._write_marker()
                # The namespace end is created directly inside the namespace as eth0.
                _run_ip(["link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
                self._created_links.append(host_if)
                self._write_marker()
                _run_ip(["link", "set", host_if, "alias", _LINK_ALIAS])
                _run_ip(["link", "set", host_if, "master", bridge])
                _run_ip(["link", "set", host_if, "up"])
                _run_ip(["-n", ns, "link", "set", "lo", "up"])
                ip = f"{prefix}.{i}.1"
                _run_ip(["-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0"])
                _run_ip(["-n", ns, "link", "set", "eth0", "up"])
                self.nodes.append(Node(index=i, name=ns, ip=ip, netns=ns, _mesh=self))

    def _teardown_netns(self) -> list[str]:
        errors: list[str] = []
        # Deleting a namespace removes its veth end, and with it the host end.
        for ns in reversed(self._created_netns):
            res = _run_ip(["netns", "delete", ns], check=False)
            if res.returncode != 0 and ns in _list_netns():
                errors.append(f"netns {ns}: {res.stderr.strip()}")
        self._created_netns.clear()
        for link in reversed(self._created_links):
            if _link_exists(link):
                res = _run_ip(["link", "delete", link], check=False)
                if res.returncode != 0 and _link_exists(link):
                    errors.append(f"link {link}: {res.stderr.strip()}")
        self._created_links.clear()
        if self._marker is not None and not errors:
            with contextlib.suppress(OSError):
                self._marker.unlink()
            self._marker = None
        return errors

    def _write_marker(self) -> None:
        """Record what this mesh created, so a later run can clean up after a crash."""
        self._marker = self._state_dir / f"{self.tag}.json"
        data = {
            "pid": os.getpid(),
            "start_time": _proc_start_time(os.getpid()),
            "netns": self._created_netns,
            "links": self._created_links,
        }
        tmp = self._marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self._marker)

    def _cleanup_stale(self) -> None:
        """Remove leftovers of meshes whose creating process is gone (ours only)."""
        for marker in sorted(self._state_dir.glob("fm*.json")):
            if not _TAG_RE.match(marker.stem):
                continue
            try:
                data = json.loads(marker.read_text())
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if _creator_alive(pid, data.get("start_time")):
                continue
            tag_pid = int(_TAG_RE.match(marker.stem).group(1))
            if tag_pid != pid:
                continue
            ok = True
            for ns in data.get("netns", []):
                if _OUR_NAME_RE.match(ns) and ns.startswith(marker.stem) and ns in _list_netns():
                    ok &= _run_ip(["netns", "delete", ns], check=False).returncode == 0
            for link in data.get("links", []):
                if (
                    _OUR_NAME_RE.match(link)
                    and link.startswith(marker.stem)
                    and _link_exists(link)
                    and _link_alias(link) == _LINK_ALIAS
                ):
                    ok &= _run_ip(["link", "delete", link], check=False).returncode == 0
            if ok:
                with contextlib.suppress(OSError):
                    marker.unlink()

    def _add_pod_ip(self, node: Node) -> str:
        if self.mode != "netns":
            node.pod_ips.append(node.ip)
            return node.ip
        k = self._pods_added.get(node.index, 0)
        if k >= _MAX_PODS_PER_NODE:
            raise NodesError(f"node {node.index}: at most {_MAX_PODS_PER_NODE} pod addresses")
        ip = node.ip.rsplit(".", 1)[0] + f".{_POD_HOST_BASE + k}"
        _run_ip(["-n", node.netns, "addr", "add", f"{ip}/16", "dev", node._ifname])
        self._pods_added[node.index] = k + 1
        node.pod_ips.append(ip)
        return ip

    # -- loopback mode ----------------------------------------------------------------

    def _setup_loopback(self, count: int) -> None:
        self.mode = "loopback"
        self.root_ip = "127.0.0.1"
        self.nodes = [
            Node(index=i, name=f"node{i}", ip=f"127.0.0.{i + 1}", netns=None, _mesh=self)
            for i in range(1, count + 1)
        ]

    # -- processes --------------------------------------------------------------------

    def _popen(self, node: Node, argv: list[str], **kw: Any) -> subprocess.Popen:
        if self._closed:
            raise NodesError("mesh is closed")
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen([*node.exec_prefix, *argv], **kw)
        proc._fastmesh_own_group = bool(kw["start_new_session"])  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc


Nodes = Mesh  # the name used in the design notes


def _list_netns() -> set[str]:
    res = _run_ip(["netns", "list"], check=False)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _link_alias(name: str) -> str | None:
    try:
        return Path("/sys/class/net", name, "ifalias").read_text().strip()
    except OSError:
        return None


def _close_at_exit(ref: "weakref.ref[Mesh]") -> None:
    mesh = ref()
    if mesh is not None:
        with contextlib.suppress(Exception):
            mesh.close()
