"""`python -m benchmarks.micro [--quick]`: run every micro-benchmark in turn, print one
summary table (each figure, its baseline and the ratio), write the JSON record.

The benchmarks run one after another in this process, pinned to one CPU (the highest
allowed unless --cpu says otherwise), each with its own interleaved runs and medians.
--quick uses short settings (a smoke run, seconds in all): its figures show the
benchmarks work, not what fastmesh achieves. A benchmark that raises is reported with
its error and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import ssl
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from benchmarks.micro import head_parse, pool, request_path, tls_objects, tls_pump
from benchmarks.micro._common import BenchResult, format_table, load_average, pin_to_one_cpu, print_result

# name -> (run function, full settings, --quick settings)
SUITE: dict[str, tuple[Callable[..., BenchResult], dict, dict]] = {
    "request_path": (request_path.run, {"requests": 100_000, "runs": 5}, {"requests": 3000, "runs": 3}),
    "head_parse": (head_parse.run, {"requests": 30_000, "runs": 5}, {"requests": 2000, "runs": 3}),
    "pool": (pool.run, {"pairs": 1_000_000, "runs": 5}, {"pairs": 50_000, "runs": 3}),
    "tls_pump": (tls_pump.run, {"runs": 5, "scale": 1.0, "max_seconds": 120.0},
                 {"runs": 2, "scale": 0.05, "max_seconds": 10.0}),
    "tls_objects": (tls_objects.run, {"rounds": 11, "requests": 20000}, {"rounds": 3, "requests": 1000}),
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results"


def _versions() -> dict:
    import httptools
    import uvloop
    return {"python": sys.version.split()[0], "uvloop": uvloop.__version__,
            "httptools": httptools.__version__, "openssl": ssl.OPENSSL_VERSION,
            "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short settings: a smoke run of every benchmark")
    ap.add_argument("--only", metavar="A,B", help=f"run only these ({', '.join(SUITE)})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where micro-<UTC time>.json goes")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the highest allowed; -1: do not pin)")
    args = ap.parse_args(argv)
    names = list(SUITE)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SUITE]
        if unknown or not names:
            ap.error(f"unknown benchmark(s) {unknown}; known: {', '.join(SUITE)}")

    pinned = "not pinned (--cpu -1)" if args.cpu == -1 else pin_to_one_cpu(args.cpu)
    started = _dt.datetime.now(_dt.timezone.utc)
    meta = {"started": started.isoformat(timespec="seconds"), "quick": args.quick, "cpu": pinned,
            "load_average_before": load_average(), **_versions()}
    print(f"benchmarks.micro{' --quick' if args.quick else ''}: {', '.join(names)}; {pinned}; "
          f"load average {meta['load_average_before']}", flush=True)

    results: list[BenchResult] = []
    record: dict = {"meta": meta, "benchmarks": {}, "errors": {}}
    for name in names:
        fn, full, quick = SUITE[name]
        settings = quick if args.quick else full
        print(f"\n== {name} ({', '.join(f'{k}={v}' for k, v in settings.items())})", flush=True)
        gc.collect()
        t0 = time.monotonic()
        try:
            res = fn(**settings)
        except Exception as exc:  # report, keep going: the other benchmarks still measure
            record["errors"][name] = "".join(traceback.format_exception(exc))
            print(f"{name} FAILED: {exc!r}", file=sys.stderr, flush=True)
            continue
        seconds = time.monotonic() - t0
        results.append(res)
        record["benchmarks"][name] = {**res.to_json(), "seconds": round(seconds, 2)}
        print_result(res)
        print(f"  ({seconds:.1f} s)", flush=True)

    meta["load_average_after"] = load_average()
    meta["seconds"] = round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)
    print("\nSummary (ratio > 1: fastmesh better; costs: baseline/fastmesh, rates: fastmesh/baseline)")
    print(format_table(results))
    if args.quick:
        print("(--quick: short runs; the figures show the benchmarks work, not what fastmesh achieves)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"micro-{started.strftime('%Y%m%d-%H%M%S')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    if record["errors"]:
        print(f"failed: {', '.join(record['errors'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
