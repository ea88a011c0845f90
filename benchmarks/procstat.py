"""CPU time and memory of processes, read from /proc: the benchmark's accounting.

CPU per request is a process tree's utime+stime delta over a run divided by the requests
completed (style-anchors §5: the most stable figure on a shared box). A process's
/proc/<pid>/stat already sums all its threads (Envoy's workers); children (nginx workers)
are found through /proc/<pid>/task/<tid>/children and added. RSS is the tree's VmRSS sum.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces/parens: the fields we need follow the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def proc_ticks(pid: int) -> int:
    """utime+stime of one process (all its threads), in clock ticks; 0 if gone."""
    f = _stat_fields(pid)
    return int(f[11]) + int(f[12]) if f else 0


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids.extend(int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            continue
    return kids


def tree(pid: int, limit: int = 256) -> list[int]:
    """`pid` and its descendants (bounded: at most `limit` processes)."""
    out, todo = [], [pid]
    while todo and len(out) < limit:
        p = todo.pop()
        if _stat_fields(p) is None:
            continue
        out.append(p)
        todo.extend(children(p))
    return out


def tree_ticks(pid: int) -> int:
    return sum(proc_ticks(p) for p in tree(pid))


def rss_kb(pid: int) -> int:
    """VmRSS of one process in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    return sum(rss_kb(p) for p in tree(pid))


PF_KTHREAD = 0x00200000  # task flag of kernel threads (include/linux/sched.h)


def all_ticks() -> dict[int, tuple[int, bool]]:
    """utime+stime of every process on the box, and whether it is a kernel thread.

    Kernel threads (ksoftirqd, kworkers) mostly run our own packets' softirq work under
    load, so they are reported apart from "others" rather than counted against a run."""
    out: dict[int, tuple[int, bool]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f:
                out[int(name)] = (int(f[11]) + int(f[12]), bool(int(f[6]) & PF_KTHREAD))
    return out


def system_busy_fraction(interval: float = 0.5) -> float:
    """Fraction of all CPUs busy (not idle/iowait) over `interval` seconds."""

    def read() -> tuple[int, int]:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals) - idle, sum(vals)

    b0, t0 = read()
    time.sleep(interval)
    b1, t1 = read()
    return (b1 - b0) / max(1, t1 - t0)


def _cpu_line() -> list[int]:
    """The aggregate "cpu" line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


@dataclass
class Window:
    """CPU accounting over one measured run: ours per process tree, and everyone else's."""

    started: float
    ours: dict[str, int]  # label -> tree ticks at start
    pids: dict[str, int]
    everyone: dict[int, tuple[int, bool]]
    box: list[int]  # /proc/stat cpu line at open

    @classmethod
    def open(cls, pids: dict[str, int]) -> "Window":
        return cls(time.monotonic(), {k: tree_ticks(p) for k, p in pids.items()}, dict(pids), all_ticks(), _cpu_line())

    def close(self, extra_ours: Iterable[int] = ()) -> "WindowResult":
        """Finish the window. `extra_ours` are PIDs of ours that are not in `pids` (the
        load generator, which ran inside the window) so they are not counted as others."""
        elapsed = time.monotonic() - self.started
        ticks = {k: tree_ticks(p) - self.ours[k] for k, p in self.pids.items()}
        now = all_ticks()
        ours_pids: set[int] = {os.getpid(), *extra_ours}
        for p in self.pids.values():
            ours_pids.update(tree(p))
        others = kernel = 0
        for pid, (t, kthread) in now.items():
            if pid in ours_pids:
                continue
            delta = max(0, t - self.everyone.get(pid, (0, kthread))[0])  # new since open: all its time
            if kthread:
                kernel += delta
            else:
                others += delta
        box = max(1e-9, elapsed * (os.cpu_count() or 1)) * CLK_TCK
        line = _cpu_line()
        delta = [b - a for a, b in zip(self.box, line)]
        total = max(1, sum(delta))
        return WindowResult(
            elapsed=elapsed,
            cpu_seconds={k: v / CLK_TCK for k, v in ticks.items()},
            others_fraction=others / box,
            kernel_threads_fraction=kernel / box,
            # Interrupt-context softirq work (our packets, mostly) is charged to no process.
            softirq_fraction=delta[6] / total if len(delta) > 6 else 0.0,
            steal_fraction=delta[7] / total if len(delta) > 7 else 0.0,
        )


@dataclass
class WindowResult:
    elapsed: float
    cpu_seconds: dict[str, float]  # label -> CPU seconds of that tree during the window
    others_fraction: float  # share of the whole box used by user processes not ours
    kernel_threads_fraction: float  # share used by kernel threads (softirq work, mostly ours)
    softirq_fraction: float  # share of the box in softirq context (charged to no process)
    steal_fraction: float  # share the hypervisor gave to other guests (noisy neighbours)
