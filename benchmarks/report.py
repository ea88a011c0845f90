"""Turn the benchmark's raw runs into medians, ratios, PASS/FAIL targets and a text report.

Every figure is a median over repetitions (clean runs when there are any: see
``usable``), and every comparison is a ratio to a peer measured in the same invocation
(Envoy, nginx, direct), never an absolute number carried over from elsewhere.
"""

from __future__ import annotations

import statistics
from typing import Any

REFERENCES = ("envoy", "nginx", "direct")
LAT_KEYS = ("p50", "p90", "p99", "p99.9")

# (id, description, threshold, goal) — thresholds from the issue; see targets().
RPS_VS_NGINX = (0.5, 0.75)
RPS_VS_ENVOY = 1.5
CPU_US_LIMIT = (30.0, 20.0)
RSS_MB_LIMIT = 50.0
VS_PYTHON = 1.5


def usable(runs: list[dict]) -> list[dict]:
    """Clean runs if there are any, else all (the summary says which)."""
    clean = [r for r in runs if r.get("clean")]
    return clean or runs


def median(values: list[float]) -> float:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def _med_dict(runs: list[dict], key: str) -> dict[str, float]:
    keys: set[str] = set()
    for r in runs:
        keys.update(r.get(key, {}))
    return {k: round(median([r[key].get(k) for r in runs if k in r.get(key, {})]), 2) for k in sorted(keys)}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b != b or a != a or b == 0:
        return None
    return round(a / b, 3)


def summarize(results: dict, subject: str) -> dict:
    closed: dict[str, dict[str, Any]] = {}
    for peer, per_c in results.get("closed", {}).items():
        closed[peer] = {}
        for c, runs in per_c.items():
            use = usable(runs)
            rps = [r["rps"] for r in use]
            cpu = _med_dict(use, "cpu_us_per_req")
            closed[peer][c] = {
                "runs": len(runs),
                "clean": sum(1 for r in runs if r.get("clean")),
                "rps": round(median(rps), 1),
                "rps_range": [min(rps), max(rps)],
                "latency_us": _med_dict(use, "latency_us"),
                "cpu_us_per_req": cpu,
                "cpu_us_per_req_proxies": round(sum(v for k, v in cpu.items() if k in ("A", "B")), 2),
                "cpu_util": _med_dict(use, "cpu_util"),
                "rss_mb": _med_dict(use, "rss_mb"),
                "errors": sum(r["errors"] for r in runs),
            }
    open_: dict[str, dict[str, Any]] = {}
    for peer, runs in results.get("open", {}).get("runs", {}).items():
        use = usable(runs)
        open_[peer] = {
            "runs": len(runs),
            "clean": sum(1 for r in runs if r.get("clean")),
            "latency_us": _med_dict(use, "latency_us"),
            "generator_lag_us": _med_dict(use, "generator_lag_us"),
            "queue_wait_us": _med_dict(use, "queue_wait_us"),
            "achieved_rps": round(median([r["achieved_rps"] for r in use]), 1),
            "incomplete": sum(r["incomplete"] for r in runs),
            "cpu_us_per_req": _med_dict(use, "cpu_us_per_req"),
        }
    idle: dict[str, dict[str, Any]] = {}
    for peer, runs in results.get("idle", {}).items():
        idle[peer] = {
            "runs": len(runs),
            "open": min(r["open"] for r in runs),
            "rss_mb": _med_dict(runs, "rss_mb"),
            "rss_mb_before": _med_dict(runs, "rss_mb_before"),
        }
    ratios: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for peer, per_c in closed.items():
        ratios[peer] = {}
        for c, s in per_c.items():
            ratios[peer][c] = {}
            for ref in REFERENCES:
                r = closed.get(ref, {}).get(c)
                if r is None or ref == peer:
                    continue
                ratios[peer][c][ref] = {
                    "rps": _ratio(s["rps"], r["rps"]),
                    **{k: _ratio(s["latency_us"].get(k), r["latency_us"].get(k)) for k in LAT_KEYS},
                    "cpu_proxies": _ratio(s["cpu_us_per_req_proxies"], r["cpu_us_per_req_proxies"] or None),
                }
    summary = {"subject": subject, "closed": closed, "open": open_, "idle": idle, "ratios": ratios}
    summary["targets"] = targets(summary, subject, results.get("peers", {}))
    return summary


def targets(summary: dict, subject: str, peers_info: dict) -> list[dict]:
    """The issue's targets, each PASS/FAIL/SKIP with the measured figure and ratio."""
    closed = summary["closed"]
    out: list[dict] = []
    subj = closed.get(subject)
    why_no_subject = None
    if not subj:
        skipped = peers_info.get(subject, {}).get("skipped")
        why_no_subject = f"{subject} not measured" + (f": {skipped}" if skipped else "")

    def add(name: str, measured: float | None, limit: float, goal: float | None, higher_is_better: bool,
            unit: str, skip: str | None = None) -> None:
        if skip or measured is None or measured != measured:
            out.append({"target": name, "status": "SKIP", "detail": skip or "no measurement"})
            return
        ok = measured >= limit if higher_is_better else measured <= limit
        goal_met = None if goal is None else (measured >= goal if higher_is_better else measured <= goal)
        op = ">=" if higher_is_better else "<="
        out.append({
            "target": name,
            "status": "PASS" if ok else "FAIL",
            "measured": round(measured, 3),
            "limit": f"{op} {limit:g}{unit}",
            "goal": None if goal is None else f"{op} {goal:g}{unit}",
            "goal_met": goal_met,
        })

    def rps(peer: str, c: int) -> float | None:
        s = closed.get(peer, {}).get(str(c))
        return s["rps"] if s else None

    def lat(peer: str, c: int, k: str) -> float | None:
        s = closed.get(peer, {}).get(str(c))
        return s["latency_us"].get(k) if s else None

    def need(peer: str, c: int) -> str | None:
        if why_no_subject:
            return why_no_subject
        if rps(peer, c) is None:
            return f"{peer} not measured at c={c}"
        if rps(subject, c) is None:
            return f"{subject} not measured at c={c}"
        return None

    for c in (16, 64):
        skip = need("nginx", c)
        add(f"req/s c={c}: {subject} / nginx", _ratio(rps(subject, c), rps("nginx", c)) if not skip else None,
            RPS_VS_NGINX[0], RPS_VS_NGINX[1], True, "x", skip)
    for c in (16, 64):
        skip = need("envoy", c)
        add(f"req/s c={c}: {subject} / envoy", _ratio(rps(subject, c), rps("envoy", c)) if not skip else None,
            RPS_VS_ENVOY, None, True, "x", skip)
    # CPU per request of each proxy process, at the largest connection count measured.
    if subj:
        cmax = max(int(c) for c in subj)
        for role in ("A", "B"):
            v = subj[str(cmax)]["cpu_us_per_req"].get(role)
            add(f"CPU µs/request, {subject} {role} (c={cmax})", v, CPU_US_LIMIT[0], CPU_US_LIMIT[1], False, " µs")
    else:
        out.append({"target": "CPU µs/request per proxy process", "status": "SKIP", "detail": why_no_subject})
    skip = need("envoy", 1)
    add(f"p99 c=1: {subject} / envoy", _ratio(lat(subject, 1, "p99"), lat("envoy", 1, "p99")) if not skip else None,
        1.0, None, False, "x", skip)
    idle = summary["idle"].get(subject)
    if idle:
        add(f"RSS of {subject} A with {idle['open']} idle keep-alive client conns", idle["rss_mb"].get("A"),
            RSS_MB_LIMIT, None, False, " MB")
    else:
        out.append({"target": "RSS with 1,000 idle keep-alive client conns", "status": "SKIP",
                    "detail": why_no_subject or "idle-connection phase not run"})
    for c in (16, 64):
        skip = need("python", c)
        add(f"req/s c={c}: {subject} / plain-Python reference", _ratio(rps(subject, c), rps("python", c)) if not skip else None,
            VS_PYTHON, None, True, "x", skip)
    return out


# -- text -------------------------------------------------------------------------------


def fmt_us(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.0f}µs" if v < 1000 else f"{v / 1000:.2f}ms"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def fmt_rps(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v / 1000:.1f}k"


def render(results: dict, summary: dict) -> str:
    meta = results.get("meta", {})
    lines: list[str] = []
    add = lines.append
    add("")
    add("=" * 100)
    add("fastmesh benchmark: load -> A :4140 -(TLS 1.3, verified 'linkerd')-> B :4141 -> world (12-byte body)")
    add("=" * 100)
    pin = meta.get("pinning", {})
    add(f"machine: {meta.get('cpu')} x{meta.get('cpus')}, kernel {meta.get('kernel')}, Python {meta.get('python')}")
    add(f"nodes: {meta.get('nodes_mode')}; pinning: proxies CPU {pin.get('proxies')}, load+world CPU "
        f"{pin.get('load_and_world')}, direct's world CPU {pin.get('direct_world')}")
    add(f"runs: {meta.get('runs')} x {meta.get('duration_s')}s per connection count, peers interleaved, "
        f"restarted per repetition; medians of clean runs ({meta.get('clean_run')})")
    world = results.get("world", {})
    add(f"world: {world.get('kind')} {world.get('version', '')}")

    add("")
    add("-- configs " + "-" * 89)
    add(f"[world] ({world.get('kind')})")
    add(world.get("config", "").rstrip())
    for name, info in results.get("peers", {}).items():
        if "skipped" in info:
            add(f"[{name}] SKIPPED: {info['skipped']}")
            continue
        add(f"[{name}] {info.get('description')} — {info.get('version')}")
        for note in info.get("notes", []):
            add(f"  note: {note}")
        for role, text in info.get("configs", {}).items():
            add(f"  --- {name} {role} ---")
            add("\n".join("  " + ln for ln in text.rstrip().splitlines()))

    closed = summary["closed"]
    add("")
    add("-- closed loop (wrk -t1, keep-alive): medians " + "-" * 54)
    hdr = (f"{'peer':<9}{'c':>4} {'req/s':>8} {'(range)':>15} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8}"
           f" {'cpuA':>7} {'cpuB':>7} {'world':>7} {'rssA':>6} {'rssB':>6} {'clean':>6}")
    add(hdr)
    add("  (cpu = µs of CPU per request of that process tree; rss = MB after the run)")
    for peer, per_c in closed.items():
        for c in sorted(per_c, key=int):
            s = per_c[c]
            cpu, rss, lat = s["cpu_us_per_req"], s["rss_mb"], s["latency_us"]
            rng = f"({fmt_rps(s['rps_range'][0])}-{fmt_rps(s['rps_range'][1])})"
            add(f"{peer:<9}{c:>4} {fmt_rps(s['rps']):>8} {rng:>15} {fmt_us(lat.get('p50')):>8} {fmt_us(lat.get('p90')):>8}"
                f" {fmt_us(lat.get('p99')):>8} {fmt_us(lat.get('p99.9')):>8}"
                f" {_f(cpu.get('A')):>7} {_f(cpu.get('B')):>7} {_f(cpu.get('world')):>7}"
                f" {_f(rss.get('A')):>6} {_f(rss.get('B')):>6} {s['clean']:>3}/{s['runs']:<2}"
                + (f"  errors {s['errors']}" if s["errors"] else ""))

    add("")
    add("-- ratios to peers measured in the same run (req/s: higher is better; latency, cpu: lower) " + "-" * 8)
    add(f"{'peer':<9}{'c':>4}  {'vs':<7} {'req/s':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'cpuA+B':>7}")
    for peer, per_c in summary["ratios"].items():
        for c in sorted(per_c, key=int):
            for ref, r in per_c[c].items():
                add(f"{peer:<9}{c:>4}  {ref:<7} {fmt_x(r['rps']):>7} {fmt_x(r['p50']):>7} {fmt_x(r['p90']):>7}"
                    f" {fmt_x(r['p99']):>7} {fmt_x(r['p99.9']):>7} {fmt_x(r['cpu_proxies']):>7}")

    op = results.get("open", {})
    if summary["open"]:
        add("")
        add(f"-- open loop: {op.get('rate', 0):.0f} req/s fixed schedule, {op.get('connections')} connections "
            f"({op.get('rate_basis')}); latency from the scheduled send time " + "-" * 5)
        add(f"{'peer':<9} {'achieved':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8} "
            f"{'p99 vs envoy/nginx/direct':>27} {'genlag99':>8} {'wait99':>8} {'incompl':>7}")
        ol = summary["open"]
        for peer, s in ol.items():
            lat = s["latency_us"]
            rs = "/".join(fmt_x(_ratio(lat.get("p99"), ol.get(ref, {}).get("latency_us", {}).get("p99")))
                          if ref in ol and ref != peer else "-" for ref in REFERENCES)
            add(f"{peer:<9} {fmt_rps(s['achieved_rps']):>9} {fmt_us(lat.get('p50')):>8} {fmt_us(lat.get('p90')):>8}"
                f" {fmt_us(lat.get('p99')):>8} {fmt_us(lat.get('p99.9')):>8} {fmt_us(lat.get('max')):>8} {rs:>27}"
                f" {fmt_us(s['generator_lag_us'].get('p99')):>8} {fmt_us(s['queue_wait_us'].get('p99')):>8}"
                f" {s['incomplete']:>7}")
        add("  (genlag = how late the generator noticed a due request; wait = then waited for a free connection)")

    if summary["idle"]:
        add("")
        add("-- memory with idle keep-alive client connections on A (RSS of each proxy tree, MB, median) " + "-" * 8)
        for peer, s in summary["idle"].items():
            b, d = s["rss_mb_before"], s["rss_mb"]
            add(f"{peer:<9} {s['open']:>5} conns   A {_f(b.get('A'))} -> {_f(d.get('A'))}   B {_f(b.get('B'))} -> {_f(d.get('B'))}")

    add("")
    add(f"-- targets for {summary['subject']} " + "-" * 70)
    for t in summary["targets"]:
        if t["status"] == "SKIP":
            add(f"SKIP  {t['target']}: {t['detail']}")
        else:
            goal = f", goal {t['goal']} {'met' if t['goal_met'] else 'not met'}" if t.get("goal") else ""
            add(f"{t['status']:<5} {t['target']}: {t['measured']:g} (needs {t['limit']}{goal})")
    for err in results.get("errors", []):
        add(f"error: {err}")
    add("")
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.1f}"
