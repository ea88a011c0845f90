"""Smoke test of the micro-benchmark suite (`python -m benchmarks.micro --quick`).

Benchmarks measure, tests assert behaviour: this runs the whole suite for real (the
Cython core and the reference proxy through their protocol objects, TLS on loopback
through an in-process fastmesh incoming router) and checks that it completes, writes its
JSON record, and that every benchmark produced figures that are numbers — never how fast
anything was.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = {"request_path", "head_parse", "pool", "tls_pump", "tls_objects"}


@pytest.mark.timeout(170)
def test_quick_suite_runs_every_benchmark_and_writes_json(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.micro", "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    written = sorted(tmp_path.glob("micro-*.json"))
    assert len(written) == 1, list(tmp_path.iterdir())
    assert f"wrote {written[0]}" in proc.stdout
    record = json.loads(written[0].read_text())

    assert record["errors"] == {}
    assert record["meta"]["quick"] is True
    assert set(record["benchmarks"]) == BENCHMARKS
    for name, bench in record["benchmarks"].items():
        figures = bench["figures"]
        assert figures, name
        # every benchmark compares fastmesh with a baseline measured in the same run
        assert any(f["baseline"] is not None for f in figures), name
        assert any(f["fastmesh"] > 0 for f in figures), name
        for f in figures:
            values = [f["fastmesh"]] + ([f["baseline"]] if f["baseline"] is not None else [])
            assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), (name, f)
            if not f["derived"]:  # a measured cost or rate (not a difference of two)
                assert all(v > 0 for v in values), (name, f)
                if f["baseline"] is not None:
                    assert f["ratio"] > 0, (name, f)
            assert f["fastmesh_runs"], (name, f)
        # the summary table names every benchmark
        assert f"\n{name} " in proc.stdout.split("Summary", 1)[1], name


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.micro", "--only", "nosuch", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr and "nosuch" in proc.stderr
    assert not list(tmp_path.iterdir())
