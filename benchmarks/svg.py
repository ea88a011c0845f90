"""A hand-written SVG plot of one benchmark run (no plotting library needed).

Four panels of grouped bars: closed-loop req/s and p99 per connection count, CPU µs per
request of each proxy process, and the open-loop latency percentiles (log scale).
"""

from __future__ import annotations

import math
from html import escape

PALETTE = {
    "fastmesh": "#d62728",
    "envoy": "#1f77b4",
    "nginx": "#2ca02c",
    "python": "#ff7f0e",
    "haproxy": "#9467bd",
    "direct": "#7f7f7f",
}
EXTRA = ("#8c564b", "#e377c2", "#17becf", "#bcbd22")
W, H = 1100, 760
PANEL_W, PANEL_H = 520, 300


def _color(name: str, i: int) -> str:
    return PALETTE.get(name, EXTRA[i % len(EXTRA)])


def _nice_max(v: float) -> float:
    if v <= 0 or v != v:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _bars(x0: float, y0: float, title: str, groups: list[str], series: list[str],
          values: dict[tuple[str, str], float], fmt, log: bool = False) -> list[str]:
    """One panel at (x0, y0): groups along x, one bar per series in each group."""
    out = [f'<text x="{x0}" y="{y0 - 8}" class="t">{escape(title)}</text>']
    left, bottom = x0 + 55, y0 + PANEL_H - 30
    plot_w, plot_h = PANEL_W - 65, PANEL_H - 40
    vals = [v for v in values.values() if v is not None and v == v and v > 0]
    if not vals or not groups or not series:
        out.append(f'<text x="{left + 10}" y="{y0 + 40}" class="s">no data</text>')
        return out
    if log:
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        hi = hi if hi > lo else lo * 10

        def ypos(v: float) -> float:
            return bottom - plot_h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

        ticks = [lo * 10**k for k in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        hi = _nice_max(max(vals))

        def ypos(v: float) -> float:
            return bottom - plot_h * v / hi

        ticks = [hi * k / 4 for k in range(5)]
    for t in ticks:
        y = ypos(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="g"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="s" text-anchor="end">{escape(fmt(t))}</text>')
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" class="a"/>')
    gw = plot_w / len(groups)
    bw = min(28.0, (gw - 10) / len(series))
    for gi, g in enumerate(groups):
        gx = left + gi * gw + (gw - bw * len(series)) / 2
        out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{bottom + 16}" class="s" text-anchor="middle">{escape(g)}</text>')
        for si, s in enumerate(series):
            v = values.get((g, s))
            if v is None or v != v or v <= 0:
                continue
            y = ypos(v)
            x = gx + si * bw
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{bottom - y:.1f}" '
                f'fill="{_color(s, si)}"><title>{escape(s)} {escape(g)}: {escape(fmt(v))}</title></rect>'
            )
    return out


def _k(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def _us(v: float) -> str:
    return f"{v / 1000:g}ms" if v >= 1000 else f"{v:g}µs"


def render(results: dict, summary: dict) -> str:
    closed = summary.get("closed", {})
    peers = list(closed) or list(summary.get("open", {}))
    conns = sorted({c for per in closed.values() for c in per}, key=int)
    groups_c = [f"c={c}" for c in conns]
    rps = {(f"c={c}", p): closed[p][c]["rps"] for p in closed for c in closed[p]}
    p99 = {(f"c={c}", p): closed[p][c]["latency_us"].get("p99") for p in closed for c in closed[p]}
    cmax = conns[-1] if conns else None
    cpu: dict[tuple[str, str], float] = {}
    proxy_peers = []
    if cmax is not None:
        for p in closed:
            s = closed[p].get(cmax)
            if s:
                for role in ("A", "B", "world"):
                    if role in s["cpu_us_per_req"]:
                        cpu[(role, p)] = s["cpu_us_per_req"][role]
                proxy_peers.append(p)
    ol = summary.get("open", {})
    pct = ("p50", "p90", "p99", "p99.9")
    open_vals = {(k, p): ol[p]["latency_us"].get(k) for p in ol for k in pct}
    meta = results.get("meta", {})
    op = results.get("open", {})

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">',
        "<style>.t{font-size:14px;font-weight:bold}.s{font-size:11px;fill:#333}"
        ".g{stroke:#ddd;stroke-width:1}.a{stroke:#333;stroke-width:1}</style>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="20" y="24" class="t">fastmesh bench {escape(str(meta.get("started", "")))}: '
        f'load → A :4140 → TLS 1.3 → B :4141 → world; medians of {escape(str(meta.get("runs")))} run(s), '
        f'proxies on CPU {escape(str(meta.get("pinning", {}).get("proxies")))}</text>',
    ]
    parts += _bars(20, 70, "closed loop req/s (higher is better)", groups_c, peers, rps, _k)
    parts += _bars(570, 70, "closed loop p99 latency (lower is better)", groups_c, peers, p99, _us)
    parts += _bars(20, 420, f"CPU µs per request per process, c={cmax} (lower is better)",
                   ["A", "B", "world"], proxy_peers, cpu, lambda v: f"{v:g}")
    parts += _bars(570, 420, f"open loop {op.get('rate', 0):.0f} req/s: latency from schedule (log)",
                   list(pct), list(ol), open_vals, _us, log=True)
    # Legend
    x = 20
    for i, p in enumerate(peers or list(ol)):
        parts.append(f'<rect x="{x}" y="{H - 22}" width="12" height="12" fill="{_color(p, i)}"/>')
        parts.append(f'<text x="{x + 16}" y="{H - 12}" class="s">{escape(p)}</text>')
        x += 30 + 8 * len(p)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
