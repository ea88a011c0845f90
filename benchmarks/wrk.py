"""Closed-loop load with wrk: one thread, N keep-alive connections, ``Host: world``.

wrk's ``--latency`` table stops at p99, so a small Lua ``done()`` hook prints the whole
summary (requests, errors, p50/p90/p99/p99.9 from wrk's own histogram) as one JSON line
that :func:`parse_output` reads; the human-readable output is kept for the log.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastmesh.nodes import Node

MARK = "WRKJSON "

DONE_LUA = """\
-- Printed once at the end: the summary as one JSON line (latencies in microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    errors: int  # connect + read + write + timeout + non-2xx/3xx
    latency_us: dict[str, float]  # p50, p90, p99, p99.9, mean, max

    def to_json(self) -> dict:
        return asdict(self)


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def write_script(workdir: Path) -> Path:
    path = workdir / "wrk-done.lua"
    path.write_text(DONE_LUA)
    return path


def wrk_argv(
    url: str, connections: int, duration: float, script: Path, host_header: str = "world", timeout_s: int = 5
) -> list[str]:
    # Debian's wrk 4.1 takes whole seconds (s/m/h units only): round up, at least 1 s.
    dur = f"{max(1, math.ceil(duration))}s"
    return [
        wrk_binary() or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{dur}",
        "--latency",
        "--timeout",
        f"{timeout_s}s",
        "-H",
        f"Host: {host_header}",
        "-s",
        str(script),
        url,
    ]


def parse_output(text: str) -> WrkResult:
    """Read the JSON line our Lua hook printed; raise ValueError if wrk did not finish."""
    for line in text.splitlines():
        if line.startswith(MARK):
            d = json.loads(line[len(MARK) :])
            dur = d["duration_us"] / 1e6
            errors = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"] + d["err_status"]
            lat = {k: float(d[k]) for k in ("p50", "p90", "p99", "p99.9", "mean", "max")}
            return WrkResult(d["requests"], dur, d["requests"] / dur if dur else 0.0, errors, lat)
    raise ValueError("wrk printed no summary:\n" + text[-2000:])


def run_wrk(node: "Node", argv: list[str], duration: float) -> tuple[WrkResult, str, int]:
    """Run wrk inside `node` to completion (bounded in time); returns result, output, PID.

    Started through the node so an interrupted harness still kills it by PID."""
    proc = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        node.mesh.stop(proc, grace=1)
        raise RuntimeError(f"wrk did not finish in {duration + 30:.0f}s")
    node.mesh.stop(proc, grace=1)  # already exited: this only forgets it
    return parse_output(out), out, proc.pid
