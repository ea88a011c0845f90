"""What every micro-benchmark shares: the result record the suite runner collects, CPU
pinning, medians of interleaved runs, and the text table.

A figure is always a pair measured in the same process — fastmesh and a baseline (the
plain-Python reference proxy, stock ``ssl``, …) — and its ratio is stated so that above
1 means fastmesh is better: baseline/fastmesh for costs (ns, µs), fastmesh/baseline for
rates (MB/s, req/s). A row with no baseline is context (a floor, an overhead) and has no
ratio.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Figure:
    """One measured quantity: medians of fastmesh's and the baseline's runs."""

    case: str                      # what was measured, e.g. "browser20 head, full cycle"
    unit: str                      # "ns/req", "MB/s", "CPU µs/req", …
    fastmesh: float                # median over the runs
    baseline: float | None = None  # median over the runs, None for a context row
    baseline_name: str = ""        # "python ref", "stock ssl", …
    lower_is_better: bool = True   # costs: True; rates: False
    derived: bool = False          # a difference of measurements: may be <= 0 in noise
    fastmesh_runs: list[float] = field(default_factory=list)
    baseline_runs: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """How many times better fastmesh is than the baseline (> 1: better)."""
        if self.baseline is None or self.fastmesh <= 0 or self.baseline <= 0:
            return None
        return self.baseline / self.fastmesh if self.lower_is_better else self.fastmesh / self.baseline

    def to_json(self) -> dict:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


@dataclass
class BenchResult:
    """Everything one micro-benchmark reports: its settings, figures and notes."""

    benchmark: str                 # module name, e.g. "head_parse"
    title: str
    settings: dict
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"benchmark": self.benchmark, "title": self.title, "settings": self.settings,
                "figures": [f.to_json() for f in self.figures], "notes": self.notes}


class CpuShare:
    """The share of wall time each timed loop got the CPU for (CPU time ÷ wall time).

    The in-memory benchmarks time this thread's CPU (CLOCK_THREAD_CPUTIME_ID), not the
    wall clock: on a shared CPU the wall clock also counts the time other processes ran.
    A share far below 1 says the CPU was shared during the run (its caches too), so the
    figures are less steady; it is reported, never hidden."""

    def __init__(self) -> None:
        self.shares: list[float] = []

    def loop(self, one, n: int) -> float:
        """Run one() n times; return CPU ns per call."""
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(n):
            one()
        cpu, wall = time.thread_time_ns() - c0, time.perf_counter_ns() - w0
        self.shares.append(cpu / wall if wall > 0 else 1.0)
        return cpu / n

    def note(self) -> str:
        if not self.shares:
            return "no timed loops"
        return (f"CPU share of the timed loops (CPU time / wall time): median "
                f"{statistics.median(self.shares):.2f}, lowest {min(self.shares):.2f}"
                + (" — the CPU was shared with other processes" if min(self.shares) < 0.9 else ""))


def median_figure(case: str, unit: str, fastmesh_runs: list[float], baseline_runs: list[float] | None,
                  baseline_name: str = "", lower_is_better: bool = True, derived: bool = False) -> Figure:
    return Figure(case, unit, statistics.median(fastmesh_runs),
                  statistics.median(baseline_runs) if baseline_runs else None, baseline_name,
                  lower_is_better, derived, list(fastmesh_runs), list(baseline_runs or []))


def pin_to_one_cpu(cpu: int | None = None) -> str:
    """Pin this process to one CPU (default: the highest one it may run on — CPU 1 on the
    2-core benchmark box, where the proxies of `benchmarks.run` run too). Under
    `taskset -c N` that set has one member already and nothing changes."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = allowed[-1]
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _num(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def format_table(results: list[BenchResult]) -> str:
    """One row per figure: benchmark, case, unit, fastmesh, baseline, ratio."""
    rows = [("benchmark", "case", "unit", "fastmesh", "baseline", "vs", "ratio")]
    for res in results:
        for f in res.figures:
            ratio = f.ratio
            rows.append((res.benchmark, f.case, f.unit, _num(f.fastmesh), _num(f.baseline),
                         f.baseline_name if f.baseline is not None else "",
                         f"{ratio:.2f}x" if ratio is not None else "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < 3 or i == 5 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_result(res: BenchResult) -> None:
    print(f"{res.title}")
    print("  settings: " + ", ".join(f"{k}={v}" for k, v in res.settings.items()))
    print(format_table([res]))
    for note in res.notes:
        print(f"  note: {note}")
