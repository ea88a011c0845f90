"""`make bench` / `fastmesh bench`: hello→world across two nodes, peers side by side.

::

    load ──plain, keep-alive──▶ proxy A :4140 ──TLS 1.3, verified "linkerd"──▶ proxy B :4141 ──plain──▶ world

Nodes are network namespaces from :mod:`fastmesh.nodes` (loopback addresses without
root). Node 1 runs the load and proxy A, node 2 proxy B and world (on a pod address).
Proxies are pinned to CPU 1, load and world to CPU 0 (``direct``: world on CPU 1).

Phases, each repeated ``--runs`` times with the peers interleaved (A B C A B C …), every
peer restarted fresh for each repetition:

1. closed loop: wrk ``-t1 -cN --latency`` for each N in ``--connections``;
2. open loop: :mod:`benchmarks.loadgen` at a fixed rate, 50% of the subject's (fastmesh's)
   best median req/s from phase 1, the same rate for every peer; then the memory of each
   proxy while :mod:`benchmarks.idle_conns` holds 1,000 idle keep-alive connections on A.

Each run records req/s, latency percentiles, CPU µs per request of every proxy process
(utime+stime from /proc over the run / requests), RSS, and the CPU used by other processes
on the box (a run is "clean" when that is ≤ 2%; medians use clean runs when there are any).
The end prints every config, a table with ratios to Envoy, nginx and direct, and PASS/FAIL
for each target; JSON and an SVG plot go to ``--out``. Every process is started inside a
node and killed by PID at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastmesh.nodes import Mesh, wait_for_port

from . import procstat, report, svg
from .peers import HELLO_BODY, HOST_HEADER, Launch, Peer, Topology, all_peers
from .peers.envoy import EnvoyPeer
from .peers.world import World
from .wrk import run_wrk, wrk_argv, wrk_binary, write_script

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEERS = "fastmesh,envoy,nginx,python,direct"
WORLD_PORT = 8080
CLEAN_OTHERS = 0.02  # a run is clean when other processes used at most 2% of the box
IDLE_GATE = 0.05  # wait (bounded) for the box to be ≥ 95% idle before each run


@dataclass
class Options:
    runs: int
    duration: float
    warmup: float
    connections: list[int]
    peers: list[str]
    subject: str
    open_duration: float
    open_connections: int
    rate: float | None
    idle_count: int
    out: Path
    world: str
    proxy_cpus: str | None
    load_cpus: str | None
    max_minutes: float
    quick: bool
    keep_workdir: bool
    strict: bool


def parse_args(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 s runs, one repetition (CI smoke test)")
    ap.add_argument("--runs", type=int, help="repetitions per peer (default 3; quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per wrk run, whole (default 5; quick 1)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up after each start (default 1; 0 = none)")
    ap.add_argument("--peers", default=DEFAULT_PEERS, help=f"comma list (default {DEFAULT_PEERS}; also haproxy)")
    ap.add_argument("--connections", default="1,16,64", help="wrk connection counts (default 1,16,64)")
    ap.add_argument("--subject", default="fastmesh", help="the peer the targets are checked for")
    ap.add_argument("--open-duration", type=float, help="seconds of the open-loop run (default = --duration)")
    ap.add_argument("--open-connections", type=int, default=64, help="connections of the open-loop generator")
    ap.add_argument("--rate", type=float, help="open-loop rate (default: 50%% of the subject's best req/s)")
    ap.add_argument("--idle-connections", type=int, default=1000, help="idle keep-alive conns for the RSS check")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"), help="where JSON and SVG go")
    ap.add_argument("--world", default="auto", choices=("auto", "nginx", "fastmesh"), help="world backend")
    ap.add_argument("--proxy-cpus", default=None, help="taskset list for proxies (default 1; '' = no pinning)")
    ap.add_argument("--load-cpus", default=None, help="taskset list for load + world (default 0)")
    ap.add_argument("--max-minutes", type=float, default=60.0, help="stop measuring after this long")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs, certs and logs")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    a = ap.parse_args(argv)
    ncpu = os.cpu_count() or 1
    proxy_cpus = a.proxy_cpus if a.proxy_cpus is not None else ("1" if ncpu >= 2 else "")
    load_cpus = a.load_cpus if a.load_cpus is not None else ("0" if ncpu >= 2 else "")
    # wrk counts whole seconds.
    duration = float(max(1, math.ceil(a.duration))) if a.duration is not None else (1.0 if a.quick else 5.0)
    conns = sorted({int(x) for x in a.connections.split(",") if x.strip()})
    if not conns or min(conns) < 1:
        ap.error("--connections: positive integers")
    runs = a.runs if a.runs is not None else (1 if a.quick else 3)
    if runs < 1 or duration <= 0:
        ap.error("--runs and --duration must be positive")
    return Options(
        runs=runs,
        duration=duration,
        warmup=a.warmup if a.warmup is not None else 1.0,
        connections=conns,
        peers=[p.strip() for p in a.peers.split(",") if p.strip()],
        subject=a.subject,
        open_duration=a.open_duration if a.open_duration is not None else duration,
        open_connections=a.open_connections,
        rate=a.rate,
        idle_count=a.idle_connections,
        out=Path(a.out),
        world=a.world,
        proxy_cpus=proxy_cpus or None,
        load_cpus=load_cpus or None,
        max_minutes=a.max_minutes,
        quick=a.quick,
        keep_workdir=a.keep_workdir,
        strict=a.strict,
    )


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Session:
    """The processes of one peer (plus world) started for one repetition."""

    peer: Peer
    pids: dict[str, int]  # role -> PID ("A", "B", "world")
    procs: list[subprocess.Popen] = field(default_factory=list)


class OutOfTime(Exception):
    pass


def _clean(win: procstat.WindowResult) -> bool:
    """A run counts as clean when neither other processes nor other guests took CPU."""
    return win.others_fraction <= CLEAN_OTHERS and win.steal_fraction <= CLEAN_OTHERS


class Bench:
    """One invocation: starts sessions per peer and repetition, measures, keeps raw runs."""

    def __init__(self, opts: Options, topo: Topology, world: World, peers: list[Peer], mesh) -> None:
        self.o = opts
        self.topo = topo
        self.world = world
        self.peers = peers
        self.mesh = mesh
        self.deadline = time.monotonic() + opts.max_minutes * 60
        self.script = write_script(topo.workdir)
        self.config_paths: dict[str, dict[str, Path]] = {}
        self.config_texts: dict[str, dict[str, str]] = {}  # kept for the report
        self.world_config = ""
        self.results: dict = {"closed": {}, "open": {"runs": {}}, "idle": {}, "errors": []}
        self.step = 0
        self.steps_total = 0

    # -- processes ------------------------------------------------------------------

    def _write_configs(self, peer: Peer) -> dict[str, Path]:
        if peer.name not in self.config_paths:
            paths = {}
            texts = peer.configs(self.topo)
            for role, text in texts.items():
                path = self.topo.workdir / f"{peer.name}-{role}.{peer.config_ext}"
                path.write_text(text)
                paths[role] = path
            self.config_paths[peer.name] = paths
            self.config_texts[peer.name] = texts
        return self.config_paths[peer.name]

    def _start(self, launch: Launch) -> subprocess.Popen:
        if launch.node.netns is None:
            # Loopback mode shares the machine's ports: refuse to measure someone else's
            # server that happens to listen where ours should.
            try:
                wait_for_port(launch.ip, launch.port, timeout=0.05)
            except TimeoutError:
                pass
            else:
                raise RuntimeError(f"{launch.ip}:{launch.port} is already in use by another process")
        logf = open(self.topo.workdir / f"log-{launch.role}-{int(time.time() * 1000)}.txt", "w")
        proc = launch.node.popen(
            launch.argv, stdout=logf, stderr=subprocess.STDOUT, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL
        )
        logf.close()
        proc._bench_log = logf.name  # type: ignore[attr-defined]
        return proc

    def _wait_ready(self, launch: Launch, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + launch.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{launch.role} exited with {proc.returncode}: {self._tail(proc)}")
            try:
                launch.node.wait_for_port(launch.port, timeout=0.5, ip=launch.ip)
                return
            except TimeoutError:
                continue
        raise RuntimeError(f"{launch.role} not listening on {launch.ip}:{launch.port}: {self._tail(proc)}")

    @staticmethod
    def _tail(proc: subprocess.Popen) -> str:
        try:
            return Path(proc._bench_log).read_text()[-1500:].strip()  # type: ignore[attr-defined]
        except OSError:
            return ""

    def start_session(self, peer: Peer) -> Session:
        direct = not peer.roles
        world_cfg = self.topo.workdir / "world.conf"
        self.world_config = self.world.config(self.topo)
        world_cfg.write_text(self.world_config)
        launches = [self.world.launch(self.topo, world_cfg, self.topo.proxy_cpus if direct else self.topo.load_cpus)]
        launches += peer.launches(self.topo, self._write_configs(peer))
        session = Session(peer, {})
        try:
            for launch in launches:
                proc = self._start(launch)
                session.procs.append(proc)
                session.pids[launch.role] = proc.pid
                self._wait_ready(launch, proc)
            self._verify(peer)
        except BaseException:
            self.stop_session(session)
            raise
        return session

    def stop_session(self, session: Session) -> None:
        for proc in reversed(session.procs):
            self.mesh.stop(proc, grace=5)

    def _verify(self, peer: Peer) -> None:
        """One request through the whole chain must come back 200 with the world's body."""
        ip, port = peer.entry(self.topo)
        code = (
            "import http.client, sys\n"
            "c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)\n"
            f"c.request('GET', '/', headers={{'Host': {HOST_HEADER!r}}})\n"
            "r = c.getresponse(); sys.stdout.write(f'{r.status} {r.read().decode(errors=\"replace\")}')\n"
        )
        res = self.topo.node_a.run(
            [self.topo.python, "-c", code, ip, str(port)], capture_output=True, text=True, timeout=30
        )
        expected = f"200 {HELLO_BODY.decode()}"
        if res.stdout != expected:
            raise RuntimeError(f"{peer.name}: check request got {res.stdout!r} {res.stderr.strip()[-500:]}")

    # -- measurements ---------------------------------------------------------------

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime(f"--max-minutes {self.o.max_minutes} reached")

    def _gate_idle(self) -> float:
        """Wait (at most ~5 s) for the box to be nearly idle; return the busy share seen."""
        busy = 1.0
        for _ in range(10):
            busy = procstat.system_busy_fraction(0.3)
            if busy <= IDLE_GATE:
                break
            time.sleep(0.2)
        return busy

    def _proxy_pids(self, session: Session) -> dict[str, int]:
        return dict(session.pids)

    def warmup(self, session: Session) -> None:
        if self.o.warmup <= 0:
            return
        ip, port = session.peer.entry(self.topo)
        argv = [*self.topo.pin(self.topo.load_cpus), *wrk_argv(f"http://{ip}:{port}/", 64, self.o.warmup, self.script)]
        run_wrk(self.topo.node_a, argv, self.o.warmup)

    def closed_loop(self, session: Session, rep: int) -> None:
        peer = session.peer
        ip, port = peer.entry(self.topo)
        for c in self.o.connections:
            self._check_time()
            busy_before = self._gate_idle()
            argv = [
                *self.topo.pin(self.topo.load_cpus),
                *wrk_argv(f"http://{ip}:{port}/", c, self.o.duration, self.script),
            ]
            window = procstat.Window.open(self._proxy_pids(session))
            res, _out, wrk_pid = run_wrk(self.topo.node_a, argv, self.o.duration)
            win = window.close(extra_ours=[wrk_pid])
            done = max(1, res.requests)
            run = {
                "rep": rep,
                "connections": c,
                "rps": round(res.rps, 1),
                "requests": res.requests,
                "errors": res.errors,
                "latency_us": res.latency_us,
                "cpu_us_per_req": {k: round(v * 1e6 / done, 2) for k, v in win.cpu_seconds.items()},
                "cpu_util": {k: round(v / max(1e-9, win.elapsed), 3) for k, v in win.cpu_seconds.items()},
                "rss_mb": {k: round(procstat.tree_rss_kb(p) / 1024, 1) for k, p in session.pids.items()},
                "others_fraction": round(win.others_fraction, 4),
                "kernel_threads_fraction": round(win.kernel_threads_fraction, 4),
                "softirq_fraction": round(win.softirq_fraction, 4),
                "steal_fraction": round(win.steal_fraction, 4),
                "busy_before": round(busy_before, 3),
                "clean": _clean(win) and res.errors == 0,
            }
            self.results["closed"].setdefault(peer.name, {}).setdefault(str(c), []).append(run)
            self.step += 1
            cpu = " ".join(f"{k} {v:.1f}µs" for k, v in run["cpu_us_per_req"].items())
            log(
                f"  [{self.step}/{self.steps_total}] {peer.name:<8} c={c:<3} run {rep + 1}/{self.o.runs}: "
                f"{res.rps / 1000:7.1f}k req/s  p50 {res.latency_us['p50']:.0f}µs  p99 {res.latency_us['p99']:.0f}µs  "
                f"cpu/req {cpu}  others {win.others_fraction * 100:.1f}%"
                + (f" steal {win.steal_fraction * 100:.1f}%" if win.steal_fraction >= 0.001 else "")
                + ("" if res.errors == 0 else f"  ERRORS {res.errors}")
            )

    def open_loop(self, session: Session, rep: int, rate: float) -> None:
        self._check_time()
        peer = session.peer
        ip, port = peer.entry(self.topo)
        argv = [
            *self.topo.pin(self.topo.load_cpus),
            self.topo.python, "-m", "benchmarks.loadgen",
            "--target", f"{ip}:{port}", "--host-header", HOST_HEADER,
            "--rate", f"{rate:.1f}", "--duration", str(self.o.open_duration),
            "--connections", str(self.o.open_connections), "--grace", "2",
        ]  # fmt: skip
        self._gate_idle()
        window = procstat.Window.open(self._proxy_pids(session))
        proc = self.topo.node_a.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.topo.repo_root)
        try:
            out, err = proc.communicate(timeout=self.o.open_duration + 60)
        except subprocess.TimeoutExpired:
            self.mesh.stop(proc, grace=1)
            raise RuntimeError("loadgen did not finish in time")
        self.mesh.stop(proc, grace=1)
        win = window.close(extra_ours=[proc.pid])
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {err.strip()[-1000:]}")
        data = json.loads(out.strip().splitlines()[-1])
        done = max(1, data["completed"])
        data.update(
            rep=rep,
            cpu_us_per_req={k: round(v * 1e6 / done, 2) for k, v in win.cpu_seconds.items()},
            others_fraction=round(win.others_fraction, 4),
            kernel_threads_fraction=round(win.kernel_threads_fraction, 4),
            softirq_fraction=round(win.softirq_fraction, 4),
            steal_fraction=round(win.steal_fraction, 4),
            clean=_clean(win) and data["incomplete"] == 0 and data["non_200"] == 0,
        )
        self.results["open"]["runs"].setdefault(peer.name, []).append(data)
        self.step += 1
        lat = data["latency_us"]
        log(
            f"  [{self.step}/{self.steps_total}] {peer.name:<8} open loop {rate / 1000:.1f}k/s run {rep + 1}/{self.o.runs}: "
            f"p50 {lat['p50']:.0f}µs p99 {lat['p99']:.0f}µs p99.9 {lat['p99.9']:.0f}µs  "
            f"completed {data['completed']}/{data['scheduled']}  generator lag p99 {data['generator_lag_us']['p99']:.0f}µs"
        )

    def idle_rss(self, session: Session, rep: int) -> None:
        """RSS of each proxy while `idle_count` keep-alive client connections sit idle on A."""
        self._check_time()
        peer = session.peer
        ip, port = peer.entry(self.topo)
        before = {k: round(procstat.tree_rss_kb(p) / 1024, 1) for k, p in session.pids.items()}
        argv = [
            *self.topo.pin(self.topo.load_cpus),
            self.topo.python, "-m", "benchmarks.idle_conns",
            "--target", f"{ip}:{port}", "--count", str(self.o.idle_count), "--hold", "120",
        ]  # fmt: skip
        proc = self.topo.node_a.popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.topo.repo_root
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 90)
            line = proc.stdout.readline() if ready else ""
            if not line:
                raise RuntimeError(f"idle_conns gave no report: {proc.stderr.read()[-500:] if proc.poll() is not None else 'timeout'}")
            opened = json.loads(line)
            time.sleep(0.5)  # let the proxies settle (buffers released, GC)
            during = {k: round(procstat.tree_rss_kb(p) / 1024, 1) for k, p in session.pids.items()}
        finally:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            self.mesh.stop(proc, grace=1)
        entry = {"rep": rep, "rss_mb_before": before, "rss_mb": during, **opened}
        self.results["idle"].setdefault(peer.name, []).append(entry)
        self.step += 1
        log(
            f"  [{self.step}/{self.steps_total}] {peer.name:<8} {opened['ok']}/{self.o.idle_count} idle conns: RSS "
            + "  ".join(f"{k} {before[k]:.1f}→{during[k]:.1f} MB" for k in during if k != "world")
        )

    # -- phases ---------------------------------------------------------------------

    def run(self) -> None:
        n_closed = len(self.peers) * len(self.o.connections) * self.o.runs
        n_proxy = sum(1 for p in self.peers if p.roles)
        self.steps_total = n_closed + self.o.runs * (len(self.peers) + n_proxy)
        log(f"phase 1: closed loop (wrk), {self.o.runs} repetition(s), peers interleaved")
        for rep in range(self.o.runs):
            for peer in self.peers:
                self._with_session(peer, lambda s, rep=rep: self.closed_loop(s, rep))
        rate, basis = self._open_loop_rate()
        self.results["open"].update(rate=rate, rate_basis=basis, connections=self.o.open_connections)
        if rate <= 0:
            log("phase 2 skipped: no closed-loop result to derive the open-loop rate from")
            return
        log(f"phase 2: open loop at {rate:.0f} req/s ({basis}) and RSS with {self.o.idle_count} idle connections")
        for rep in range(self.o.runs):
            for peer in self.peers:

                def phase2(s: Session, rep: int = rep) -> None:
                    self.open_loop(s, rep, rate)
                    if s.peer.roles:
                        self.idle_rss(s, rep)

                self._with_session(peer, phase2)

    def _with_session(self, peer: Peer, body) -> None:
        self._check_time()
        try:
            session = self.start_session(peer)
        except (RuntimeError, OSError, TimeoutError, subprocess.SubprocessError) as exc:
            msg = f"{peer.name}: could not start: {exc}"
            log("  " + msg)
            self.results["errors"].append(msg)
            return
        try:
            self.warmup(session)
            body(session)
        except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
            msg = f"{peer.name}: {exc}"
            log("  error: " + msg)
            self.results["errors"].append(msg)
        finally:
            self.stop_session(session)

    def _open_loop_rate(self) -> tuple[float, str]:
        if self.o.rate:
            return self.o.rate, "--rate"
        order = [self.o.subject, "python", "nginx", "envoy", "haproxy", "direct"]
        for name in order:
            per_c = self.results["closed"].get(name)
            if not per_c:
                continue
            best = max(report.median([r["rps"] for r in report.usable(runs)]) for runs in per_c.values())
            basis = f"50% of {name}'s best median req/s {best:.0f}"
            if name != self.o.subject:
                basis += f" ({self.o.subject} not measured)"
            return round(best * 0.5, 1), basis
        return 0.0, "none"


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _make_certs(dest: Path) -> tuple[Path, Path, Path]:
    from fastmesh.certs import generate_mesh_certs

    paths = generate_mesh_certs(dest, common_name="linkerd", days=30, key_type="ec")
    return paths.ca_cert, paths.cert, paths.key


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    known = all_peers()
    unknown = [p for p in opts.peers if p not in known]
    if unknown:
        print(f"unknown peer(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    if wrk_binary() is None:
        print("wrk not installed (apt-get install wrk): the closed-loop runs need it", file=sys.stderr)
        return 2
    selected: list[Peer] = []
    skipped: dict[str, str] = {}
    for name in opts.peers:
        peer = known[name]
        if isinstance(peer, EnvoyPeer):
            peer.bind_repo(REPO_ROOT)
        reason = peer.missing()
        if reason:
            skipped[name] = reason
            log(f"skip {name}: {reason}")
        else:
            selected.append(peer)
    if not selected:
        print("no peer can run here", file=sys.stderr)
        return 2

    def on_term(signum, frame):  # SIGTERM: unwind like Ctrl-C so every process is killed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    nofile = _raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fastmesh-bench-"))
    workdir.chmod(0o755)
    started = datetime.datetime.now(datetime.timezone.utc)
    interrupted = False
    results: dict = {}
    bench: Bench | None = None
    try:
        with Mesh(2) as mesh:
            node_a, node_b = mesh.node(1), mesh.node(2)
            world_ip = node_b.add_pod_ip()
            ca, cert, key = _make_certs(workdir / "certs")
            topo = Topology(
                node_a=node_a,
                node_b=node_b,
                world_ip=world_ip,
                world_port=WORLD_PORT,
                ca_cert=ca,
                cert=cert,
                key=key,
                workdir=workdir,
                repo_root=REPO_ROOT,
                python=sys.executable,
                proxy_cpus=opts.proxy_cpus,
                load_cpus=opts.load_cpus,
                admin_b=9990 if mesh.mode == "netns" else 9991,
            )
            world = World(opts.world)
            log(
                f"nodes: {mesh.mode}"
                + (f" ({mesh.fallback_reason})" if mesh.fallback_reason else "")
                + f"; node1 {node_a.ip} (load, proxy A), node2 {node_b.ip} (proxy B), world {world_ip}:{WORLD_PORT} ({world.kind})"
            )
            log(
                f"pinning: proxies on CPU {opts.proxy_cpus or 'any'}, load + world on CPU {opts.load_cpus or 'any'}"
                f" (direct: world on CPU {opts.proxy_cpus or 'any'}); runs {opts.runs} x {opts.duration:g}s; "
                f"peers {', '.join(p.name for p in selected)}"
            )
            bench = Bench(opts, topo, world, selected, mesh)
            try:
                bench.run()
            except OutOfTime as exc:
                log(f"stopped early: {exc}")
                bench.results["errors"].append(str(exc))
            results = _assemble(opts, bench, selected, skipped, world, mesh, nofile, started)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: every process started was killed; writing what was measured")
    finally:
        if not opts.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"workdir kept: {workdir}")
    if interrupted:
        if bench is None:
            return 130
        results = _assemble(opts, bench, selected, skipped, bench.world, None, nofile, started)
        results["meta"]["interrupted"] = True

    summary = report.summarize(results, opts.subject)
    results["summary"] = summary
    text = report.render(results, summary)
    print(text)
    opts.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path = opts.out / f"bench-{stamp}.json"
    svg_path = opts.out / f"bench-{stamp}.svg"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    svg_path.write_text(svg.render(results, summary))
    log(f"results: {json_path}\nplot:    {svg_path}")
    if interrupted:
        return 130
    if opts.strict and any(t["status"] == "FAIL" for t in summary["targets"]):
        return 1
    return 0


def _assemble(opts, bench, selected, skipped, world, mesh, nofile, started) -> dict:
    peers_info = {}
    for peer in selected:
        peers_info[peer.name] = {
            "description": peer.description,
            "version": _safe(peer.version),
            "notes": peer.notes,
            "configs": bench.config_texts.get(peer.name, {}),
        }
    for name, reason in skipped.items():
        peers_info[name] = {"skipped": reason}
    return {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "nodes_mode": mesh.mode if mesh is not None else "?",
            "pinning": {
                "proxies": opts.proxy_cpus,
                "load_and_world": opts.load_cpus,
                "direct_world": opts.proxy_cpus,
            },
            "runs": opts.runs,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "connections": opts.connections,
            "open_duration_s": opts.open_duration,
            "subject": opts.subject,
            "quick": opts.quick,
            "nofile": nofile,
            "wrk": "wrk -t1 -cN --latency -H 'Host: world' (p99.9 from wrk's histogram via a Lua done() hook)",
            "clean_run": f"other processes and hypervisor steal each <= {CLEAN_OTHERS * 100:.0f}% of the box, no errors",
        },
        "world": {"kind": world.kind, "version": _safe(world.version), "config": bench.world_config},
        "peers": peers_info,
        "closed": bench.results["closed"],
        "open": bench.results["open"],
        "idle": bench.results["idle"],
        "errors": bench.results["errors"],
    }


def _safe(fn) -> str:
    try:
        return fn()
    except Exception as exc:  # a version string is never worth failing the run for
        return f"? ({exc})"


if __name__ == "__main__":
    sys.exit(main())
