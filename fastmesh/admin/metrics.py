"""The admin's metrics endpoints: linkerd's metrics tree, read from the C counters at scrape time.

Role in the data path: none per request. The Cython core counts into a shared arena of
int64 blocks (fastmesh._core.stats), one block per scope and process; this module reads a
snapshot of that arena when someone asks, builds linkerd's metrics tree from it (spec
§8.2 scope names) and renders that one tree two ways:

* ``/admin/metrics.json`` (always served): linkerd's flat ``{"rt/outgoing/server/0.0.0.0/4140/requests": 3}``
  form, or nested with ``tree=1``; ``pretty=1`` sorts and indents; ``q=a/b`` serves a subtree
  (404 ``{"error": "No such subtree: a/b"}`` when it does not exist).
* the ``io.l5d.prometheus`` telemeter's ``path`` (default ``/admin/metrics/prometheus``),
  served only when that telemeter is configured, as in linkerd: the tree walked with the
  label-rewriting rules of spec §8.3 (``rt:client:requests{rt="outgoing", client="#/io.l5d.fs/world"}``),
  names prefixed with the telemeter's ``prefix``. Produced by a prometheus_client custom
  collector on its own CollectorRegistry, so the Accept header picks the Prometheus text
  format or OpenMetrics (``choose_encoder``).

With ``fastmesh run --workers N`` the parent serves admin and every worker writes its own
blocks into the same arena; ``StatsArena.snapshot()`` sums blocks by key, so one scrape
shows the whole instance.

Decisions (deliberate, documented differences from linkerd):

* **Latency histograms.** The core keeps fixed buckets (``bucket_bounds_us()``, about three
  per doubling) that only ever grow. linkerd serves a *60-second snapshot* of each stat
  (spec §8.2: histograms are snapshotted every minute and reset). We keep both views:

  - linkerd-compatible lines: every ``LatencyWindows.interval_s`` (60 s, like linkerd's
    ``histogramSnapshotInterval``; ``FASTMESH_HISTOGRAM_SNAPSHOT_S`` overrides it) the
    admin takes the difference of the cumulative buckets since the previous snapshot and
    serves that window: ``request_latency_ms.count/.p50/...`` in metrics.json, and in
    Prometheus ``X_count``, ``X_sum``, ``X_avg`` and ``X{quantile="0"|"0.5"|...|"1"}`` exactly
    as linkerd lays them out (absent before the first snapshot; in Prometheus also absent
    for an empty window). Quantiles are estimated from the buckets: linear interpolation
    inside the bucket that holds the rank, min/max are the edges of the first/last
    non-empty bucket, and when the whole window sits in one bucket every quantile is the
    window's exact mean (so one sample reads exactly). Bucket edges are 40% apart, so an
    estimate is within ~20% of the true value (finagle's are within 0.5%).
  - a real cumulative Prometheus histogram under its own name,
    ``rt:<scope>:request_latency_seconds`` (``_bucket{le=...}``, ``_sum``, ``_count``; le and
    sum in seconds), for ``histogram_quantile(0.99, rate(..._bucket[1m]))``. It cannot share
    linkerd's base name: ``X_count``/``X_sum`` would then be both the window values and the
    histogram's cumulative ones, which no parser accepts.

  metrics.json keeps linkerd's integer milliseconds (``p50`` etc. are whole ms, ``avg`` a
  float); Prometheus quantile/sum/avg lines carry fractional milliseconds (µs resolution),
  because sub-millisecond latencies are the norm for a node-local proxy and a Prometheus
  value is a float anyway.
* **Types.** linkerd prints no ``# TYPE`` lines. prometheus_client always does, and an
  OpenMetrics ``counter`` must end in ``_total``, which would rename every linkerd counter.
  So counters and the linkerd stat lines are ``untyped`` (``unknown`` in OpenMetrics);
  gauges are ``gauge``; the new latency histogram is ``histogram``. Prometheus computes
  ``rate()`` on untyped series like on counters.
* **Label values** use the standard Prometheus escaping (``\\\\``, ``\\"``, ``\\n``), not
  linkerd's quirk of replacing each such character by two backslashes (spec §8.3). Labels
  are separated by ``,`` and sorted by name (prometheus_client's output), not ``", "`` in
  scope order; both are the same series to any Prometheus parser.
* **promtool.** ``promtool check metrics`` parses the exposition; its style lint flags the
  colons of every linkerd name ("metric names should not contain ':'") and the ``_ms`` of
  ``request_latency_ms`` ("abbreviated units"). Both are the price of keeping linkerd's
  names and are the only problems it reports (tests/test_prometheus_e2e.py checks that).
* **Process metrics.** linkerd dashboards count instances with ``jvm:uptime``; we serve a
  ``jvm/uptime`` gauge (milliseconds since this process started, as the JVM's) so those
  queries keep working, and prometheus_client's standard ``process_*`` metrics of the
  process serving admin (with ``--workers N`` that is the parent, not the workers).
* **Scopes fastmesh adds** where linkerd has no counter: ``connect_failures``,
  ``pool_hits``, ``pool_misses``, ``tls_handshakes``, ``tls_failures`` (clients),
  ``error_responses`` (server: responses fastmesh wrote itself, with ``l5d-err``) and
  ``route_refreshes`` (router). Route-cache misses are linkerd's ``bindcache/path/misses``
  and uncached bindings for requests with a local dtab its ``bindcache/path/oneshots``;
  requeues are ``retries/requeues``. ``status/<code>`` and ``status/<N>XX`` appear once
  such a status was seen, as in linkerd (also under ``service``, where linkerd has none).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from fastmesh._core import stats as _stats
from fastmesh.admin.server import AdminRequest, AdminResponse, AdminServer

if TYPE_CHECKING:
    from fastmesh.linker import Linker

SLOT = _stats.SLOT_NAMES
CLASS_BASE = _stats.CLASS_BASE
CODE_BASE = _stats.CODE_BASE
HIST_BASE = _stats.HIST_BASE
NBUCKETS = _stats.NBUCKETS
BOUNDS_US: list[int] = _stats.bucket_bounds_us()

DEFAULT_SNAPSHOT_INTERVAL_S = 60.0
SNAPSHOT_ENV = "FASTMESH_HISTOGRAM_SNAPSHOT_S"

# linkerd's summary points, in the order metrics.json prints them (after count).
JSON_QUANTILES = (("max", 1.0), ("min", 0.0), ("p50", 0.5), ("p90", 0.9), ("p95", 0.95),
                  ("p99", 0.99), ("p9990", 0.999), ("p9999", 0.9999))
# ...and the quantile labels of the Prometheus lines (0 = min, 1 = max).
PROM_QUANTILES = (("0", 0.0), ("0.5", 0.5), ("0.9", 0.9), ("0.95", 0.95), ("0.99", 0.99),
                  ("0.999", 0.999), ("0.9999", 0.9999), ("1", 1.0))

# (scope name, arena slot) per block kind; a counter is printed even when zero.
SERVER_COUNTERS = (("requests", "requests"), ("success", "success"), ("failures", "failures"),
                   ("connects", "connects"), ("closes", "closes"),
                   ("received_bytes", "received_bytes"), ("sent_bytes", "sent_bytes"),
                   ("error_responses", "errors"))
SERVER_GAUGES = (("pending", "pending"), ("connections", "connections"))
CLIENT_COUNTERS = (("requests", "requests"), ("success", "success"), ("failures", "failures"),
                   ("connects", "connects"), ("closes", "closes"),
                   ("connect_failures", "connect_failures"),
                   ("pool_hits", "pool_hits"), ("pool_misses", "pool_misses"),
                   ("tls_handshakes", "tls_handshakes"), ("tls_failures", "tls_failures"),
                   ("retries/requeues", "requeues"))
CLIENT_GAUGES = SERVER_GAUGES
SERVICE_COUNTERS = (("requests", "requests"), ("success", "success"), ("failures", "failures"))
SERVICE_GAUGES = (("pending", "pending"),)
ROUTER_COUNTERS = (("bindcache/path/misses", "route_misses"),
                   ("bindcache/path/oneshots", "route_overrides"),
                   ("route_refreshes", "route_refreshes"))

KIND_ORDER = {"server": 0, "service": 1, "client": 2}

HELP = {
    "requests": "requests seen by this scope (linkerd: requests)",
    "success": "requests that succeeded (response classifier: not 5XX)",
    "failures": "requests that failed (5XX or an error fastmesh answered with)",
    "pending": "requests in flight",
    "connections": "open connections",
    "connects": "connections opened",
    "closes": "connections closed",
    "connect_failures": "upstream connection attempts that failed (fastmesh)",
    "received_bytes": "bytes received from clients",
    "sent_bytes": "bytes sent to clients",
    "error_responses": "error responses written by fastmesh itself, with l5d-err (fastmesh)",
    "pool_hits": "requests sent on a pooled upstream connection (fastmesh)",
    "pool_misses": "requests that had to open an upstream connection (fastmesh)",
    "tls_handshakes": "TLS handshakes completed to upstreams (fastmesh)",
    "tls_failures": "TLS handshakes to upstreams that failed (fastmesh)",
    "requeues": "requests re-sent after a connection failure (linkerd: retries/requeues)",
    "misses": "route-cache misses: names bound by the Python router",
    "oneshots": "requests bound uncached because they carry a local dtab",
    "route_refreshes": "cached routes re-bound after a namer change (fastmesh)",
    "uptime": "milliseconds since this fastmesh process started (linkerd: jvm/uptime)",
    "request_latency_ms": "request latency in ms over the last snapshot window (linkerd stat)",
}


def _help(path: Sequence[str]) -> str:
    if len(path) >= 2 and path[-2] == "status":
        if path[-1] == "error":
            return "requests that ended without an HTTP status"
        return f"responses with status {path[-1]}"
    return HELP.get(path[-1], "fastmesh metric " + "/".join(path[-2:]))


# ---- the arena, read ------------------------------------------------------------------

@dataclass(frozen=True)
class BlockKey:
    """A stat block's key: which scope its counters belong to."""
    kind: str              # "server" | "client" | "service" | "router"
    rt: str                # router label
    name: str = ""         # "0.0.0.0/4140", "/#/io.l5d.fs/world", "/svc/world"; "" for routers

    @classmethod
    def parse(cls, text: str) -> "BlockKey | None":
        try:
            fields = json.loads(text)
        except ValueError:
            return None
        kind = fields.get("kind")
        if kind not in ("server", "client", "service", "router") or "rt" not in fields:
            return None
        return cls(kind, str(fields["rt"]), str(fields.get(kind, "")) if kind != "router" else "")

    @property
    def scope_name(self) -> str:
        """The scope element linkerd uses: bound ids and service names lose their leading '/'."""
        if self.kind in ("client", "service") and self.name.startswith("/"):
            return self.name[1:]
        return self.name


@dataclass
class Histogram:
    """Latency bucket counts (not cumulative), their total and the sum in µs."""
    buckets: list[int]
    sum_us: int

    @property
    def count(self) -> int:
        return sum(self.buckets)

    @classmethod
    def of_slots(cls, slots: Sequence[int]) -> "Histogram":
        return cls(list(slots[HIST_BASE:HIST_BASE + NBUCKETS]), slots[SLOT["latency_sum_us"]])

    def minus(self, earlier: "Histogram | None") -> "Histogram":
        if earlier is None:
            return Histogram(list(self.buckets), self.sum_us)
        # max(0, ...) guards against a key whose blocks went away (never today: blocks
        # are never freed), so a window can never show negative counts.
        return Histogram([max(0, a - b) for a, b in zip(self.buckets, earlier.buckets)],
                         max(0, self.sum_us - earlier.sum_us))

    def quantile_us(self, q: float) -> float | None:
        """Estimated q-quantile in µs (None when empty); see the module docstring."""
        nonempty = [i for i, n in enumerate(self.buckets) if n]
        if not nonempty:
            return None
        count = sum(self.buckets)
        if len(nonempty) == 1:
            # One bucket: the mean is inside it and exact for a single sample.
            return self.sum_us / count
        if q <= 0.0:
            return float(_lower_us(nonempty[0]))
        if q >= 1.0:
            return float(_upper_us(nonempty[-1]))
        rank = q * count
        seen = 0
        for i in nonempty:
            n = self.buckets[i]
            if seen + n >= rank:
                lo, hi = _lower_us(i), _upper_us(i)
                return lo + (hi - lo) * max(0.0, rank - seen) / n
            seen += n
        return float(_upper_us(nonempty[-1]))


def _lower_us(i: int) -> int:
    return BOUNDS_US[i - 1] if i > 0 else 0


def _upper_us(i: int) -> int:
    # The last bucket has no upper edge; its lower edge is the best we can say.
    return BOUNDS_US[i] if i < NBUCKETS - 1 else BOUNDS_US[NBUCKETS - 2]


class LatencyWindows:
    """linkerd's histogram snapshots: the buckets of the last full window per block key.

    `roll()` (every `interval_s`, driven by the admin's event loop) records how much each
    key's cumulative buckets grew since the previous roll. Before the first roll there is
    no window at all (`window()` returns None), as in linkerd.
    """

    def __init__(self, interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S):
        self.interval_s = interval_s
        self._previous: dict[str, Histogram] = {}
        self._windows: dict[str, Histogram] | None = None
        self.rolled_at: float | None = None

    def roll(self, snapshot: dict[str, list[int]]) -> None:
        current = {key: Histogram.of_slots(slots) for key, slots in snapshot.items()}
        self._windows = {key: h.minus(self._previous.get(key)) for key, h in current.items()}
        self._previous = current
        self.rolled_at = time.monotonic()

    def window(self, key: str) -> Histogram | None:
        if self._windows is None:
            return None
        return self._windows.get(key, Histogram([0] * NBUCKETS, 0))


# ---- the metrics tree ---------------------------------------------------------------

@dataclass
class Stat:
    """A linkerd stat: the window (None before the first snapshot) and the cumulative buckets."""
    window: Histogram | None
    cumulative: Histogram


@dataclass
class Node:
    """One element of linkerd's metrics tree; `kind` is set when the node holds a value."""
    kind: str | None = None            # "counter" | "gauge" | "stat"
    value: Any = None
    children: dict[str, "Node"] = field(default_factory=dict)

    def child(self, name: str) -> "Node":
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node()
        return node

    def put(self, path: Sequence[str], kind: str, value: Any) -> None:
        node = self
        for element in path:
            node = node.child(element)
        node.kind, node.value = kind, value

    def resolve(self, parts: Sequence[str]) -> "Node | None":
        """The subtree at `parts` (a `q=a/b/c` split on '/').

        Scope elements may contain '/' (`0.0.0.0/4140`, `#/io.l5d.fs/world`), which
        linkerd's own lookup cannot address; we also accept them by joining consecutive
        parts, longest first.
        """
        if not parts:
            return self
        for take in range(len(parts), 0, -1):
            child = self.children.get("/".join(parts[:take]))
            if child is not None:
                found = child.resolve(parts[take:])
                if found is not None:
                    return found
        return None

    def walk(self, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], "Node"]]:
        """Depth-first, parent before children, like linkerd's exporters."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.walk(prefix + (name,))


def build_tree(snapshot: dict[str, list[int]], windows: LatencyWindows | None,
               router_order: Sequence[str] = (), uptime_ms: float | None = None) -> Node:
    """linkerd's metrics tree (spec §8.2 scopes) from one arena snapshot."""
    root = Node()
    parsed = []
    for key, slots in snapshot.items():
        bk = BlockKey.parse(key)
        if bk is not None:
            parsed.append((bk, key, slots))
    order = {label: i for i, label in enumerate(router_order)}
    parsed.sort(key=lambda e: (order.get(e[0].rt, len(order)), e[0].rt,
                               e[0].kind != "router", KIND_ORDER.get(e[0].kind, 9), e[0].name))
    for bk, key, slots in parsed:
        rt = ("rt", bk.rt)
        if bk.kind == "router":
            for name, slot in ROUTER_COUNTERS:
                root.put(rt + tuple(name.split("/")), "counter", slots[SLOT[slot]])
            continue
        base = rt + (bk.kind, bk.scope_name)
        counters, gauges = {
            "server": (SERVER_COUNTERS, SERVER_GAUGES),
            "client": (CLIENT_COUNTERS, CLIENT_GAUGES),
            "service": (SERVICE_COUNTERS, SERVICE_GAUGES),
        }[bk.kind]
        for name, slot in counters:
            root.put(base + tuple(name.split("/")), "counter", slots[SLOT[slot]])
        for name, slot in gauges:
            root.put(base + (name,), "gauge", float(slots[SLOT[slot]]))
        root.put(base + ("request_latency_ms",), "stat",
                 Stat(windows.window(key) if windows is not None else None,
                      Histogram.of_slots(slots)))
        for code in range(100, 600):
            n = slots[CODE_BASE + code - 100]
            if n:
                root.put(base + ("status", str(code)), "counter", n)
        for cls in range(1, 6):
            n = slots[CLASS_BASE + cls]
            if n:
                root.put(base + ("status", f"{cls}XX"), "counter", n)
        if slots[CLASS_BASE]:
            root.put(base + ("status", "error"), "counter", slots[CLASS_BASE])
    if uptime_ms is not None:
        root.put(("jvm", "uptime"), "gauge", float(uptime_ms))
    return root


# ---- /admin/metrics.json ------------------------------------------------------------

def _json_stat(name: str, window: Histogram | None) -> list[tuple[str, Any]]:
    if window is None:
        return []          # no snapshot yet: linkerd prints nothing
    count = window.count
    out: list[tuple[str, Any]] = [(f"{name}.count", count)]
    if count > 0:
        for label, q in JSON_QUANTILES:
            out.append((f"{name}.{label}", int(window.quantile_us(q) // 1000)))
        out.append((f"{name}.sum", int(window.sum_us // 1000)))
        out.append((f"{name}.avg", window.sum_us / 1000.0 / count))
    return out


def _json_value(node: Node, name: str) -> list[tuple[str, Any]]:
    if node.kind == "counter":
        return [(name, int(node.value))]
    if node.kind == "gauge":
        return [(name, float(node.value))]
    if node.kind == "stat":
        return _json_stat(name, node.value.window)
    return []


def flat_json(tree: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, node in tree.walk():
        if node.kind is not None:
            out.update(_json_value(node, "/".join(path)))
    return out


def tree_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = dict(_json_value(node, node.kind)) if node.kind else {}
    for name, child in node.children.items():
        out[name] = tree_json(child)
    return out


def _flag(req: AdminRequest, name: str) -> bool:
    # finagle's getBooleanParam: "true" or "1", case-insensitive
    return (req.arg(name) or "").strip().lower() in ("1", "true")


def metrics_json_response(tree: Node, req: AdminRequest) -> AdminResponse:
    q = req.arg("q")
    node = tree.resolve([p for p in q.split("/")]) if q is not None else tree
    if node is None:
        return AdminResponse(status=404, body=json.dumps({"error": f"No such subtree: {q}"},
                                                         separators=(", ", ": ")).encode(),
                             content_type="application/json")
    if _flag(req, "tree"):
        body = json.dumps(tree_json(node), separators=(",", ":"))
    elif _flag(req, "pretty"):
        body = json.dumps(flat_json(node), indent=2, sort_keys=True)
    else:
        body = json.dumps(flat_json(node), separators=(",", ":"))
    return AdminResponse.json_bytes(body.encode())


# ---- Prometheus -----------------------------------------------------------------------

def prometheus_name(path: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """linkerd's scope → (name elements, labels) rewriting, applied level by level (§8.3)."""
    prefix: list[str] = []
    labels: list[tuple[str, str]] = []
    for element in path:
        prefix.append(element)
        prefix, labels = _rewrite(prefix, labels)
    return prefix, labels


def _has(labels: list[tuple[str, str]], name: str) -> bool:
    return any(k == name for k, _ in labels)


def _rewrite(p: list[str], labels: list[tuple[str, str]]):
    n = len(p)
    if n == 2 and p[0] == "rt" and not _has(labels, "rt"):
        return ["rt"], labels + [("rt", p[1])]
    if n == 3 and p[0] == "rt" and p[1] in ("service", "client", "server") and not _has(labels, p[1]):
        return ["rt", p[1]], labels + [(p[1], p[2])]
    if n == 4 and p[:3] == ["rt", "client", "service"] and not _has(labels, "service"):
        return ["rt", "client", "service"], labels + [("service", p[3])]
    if n == 4 and p[0] == "rt" and p[2] in ("failures", "exn"):
        value = p[3]
        rest = [(k, v) for k, v in labels if k != "exception"]
        outer = [v for k, v in labels if k == "exception"]
        if outer:
            value = f"{outer[0]}:{value}"
        name = "failures" if p[2] == "failures" else "exceptions"
        return ["rt", p[1], name], rest + [("exception", value)]
    return p, labels


def metric_name(prefix: str, elements: Sequence[str]) -> str:
    """prefix + elements joined by ':', every char outside [a-zA-Z0-9:] → '_' (as linkerd)."""
    raw = prefix + ":".join(elements)
    name = "".join(c if (c.isascii() and (c.isalnum() or c == ":")) else "_" for c in raw)
    if name and name[0].isdigit():
        name = "_" + name   # a Prometheus name cannot start with a digit
    return name


def _label_name(name: str) -> str:
    return "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else "_" for c in name)


def _fmt_le(seconds: float) -> str:
    # bounds are whole µs: six decimals are exact; "1.0" style like prometheus_client
    text = f"{seconds:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


LE_SECONDS = [_fmt_le(b / 1e6) for b in BOUNDS_US[:-1]] + ["+Inf"]


class LinkerdCollector:
    """prometheus_client custom collector: the metrics tree with linkerd's names, at scrape time."""

    def __init__(self, source: "MetricsSource", prefix: str = ""):
        self.source = source
        self.prefix = prefix

    def collect(self):
        from prometheus_client.core import Metric

        families: dict[str, Any] = {}

        def family(name: str, typ: str, doc: str):
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Metric(name, doc, typ)
            return fam

        for path, node in self.source.tree().walk():
            if node.kind is None:
                continue
            elements, labels = prometheus_name(path)
            labels = [(_label_name(k), v) for k, v in labels]
            name = metric_name(self.prefix, elements)
            doc = _help(path)
            if node.kind == "counter":
                family(name, "unknown", doc).add_sample(name, dict(labels), int(node.value))
            elif node.kind == "gauge":
                family(name, "gauge", doc).add_sample(name, dict(labels), float(node.value))
            elif node.kind == "stat":
                self._stat(family, families, name, elements, labels, node.value)
        return list(families.values())

    def _stat(self, family, families, name, elements, labels, stat: Stat):
        from prometheus_client.core import HistogramMetricFamily
        window = stat.window
        lab = dict(labels)
        if window is not None and window.count > 0:
            count = window.count
            family(name + "_count", "unknown", "requests in the last snapshot window (linkerd stat count)"
                   ).add_sample(name + "_count", lab, count)
            family(name + "_sum", "unknown", "sum of latencies in ms over the last snapshot window"
                   ).add_sample(name + "_sum", lab, round(window.sum_us / 1000.0, 3))
            family(name + "_avg", "unknown", "mean latency in ms over the last snapshot window"
                   ).add_sample(name + "_avg", lab, round(window.sum_us / 1000.0 / count, 3))
            fam = family(name, "unknown", HELP["request_latency_ms"] +
                         "; quantile 0 = min, 1 = max, estimated from buckets")
            for label, q in PROM_QUANTILES:
                fam.add_sample(name, {**lab, "quantile": label},
                               round(window.quantile_us(q) / 1000.0, 3))
        # The cumulative histogram, named like the stat with seconds instead of ms.
        hname = metric_name(self.prefix, list(elements[:-1]) + ["request_latency_seconds"])
        hist = families.get(hname)
        if hist is None:
            hist = families[hname] = HistogramMetricFamily(
                hname, "request latency in seconds since the process started (fastmesh)",
                labels=[k for k, _ in labels])
        cum = stat.cumulative
        acc, buckets = 0, []
        for le, n in zip(LE_SECONDS, cum.buckets):
            acc += n
            buckets.append((le, acc))
        hist.add_metric([v for _, v in labels], buckets, cum.sum_us / 1e6)


# ---- wiring -------------------------------------------------------------------------

def process_uptime_ms() -> float:
    """Milliseconds since this process started (from /proc; time of first call elsewhere)."""
    return (time.monotonic() - _PROCESS_START_MONOTONIC) * 1000.0


def _process_start_monotonic() -> float:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])          # field 22: starttime, in clock ticks since boot
        with open("/proc/uptime") as f:
            boot_uptime = float(f.read().split()[0])
        # CLOCK_MONOTONIC and /proc/uptime both count from boot (neither counts suspend).
        age = boot_uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return time.monotonic()


_PROCESS_START_MONOTONIC = _process_start_monotonic()


class MetricsSource:
    """Reads the arena and keeps the histogram windows of one admin server."""

    def __init__(self, arena, router_order: Sequence[str] = (),
                 snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S):
        self.arena = arena
        self.router_order = list(router_order)
        self.windows = LatencyWindows(snapshot_interval_s)

    def snapshot(self) -> dict[str, list[int]]:
        return self.arena.snapshot()

    def tree(self) -> Node:
        return build_tree(self.snapshot(), self.windows, self.router_order, process_uptime_ms())

    def roll(self) -> None:
        self.windows.roll(self.snapshot())

    def start(self, loop, admin: AdminServer) -> None:
        """Roll the windows every interval while the admin server lives."""
        def tick() -> None:
            if admin.server is not None and not admin.server.is_serving():
                return          # admin closed: stop the timer chain
            self.roll()
            loop.call_later(self.windows.interval_s, tick)
        loop.call_later(self.windows.interval_s, tick)


def snapshot_interval_from_env(default: float = DEFAULT_SNAPSHOT_INTERVAL_S) -> float:
    text = os.environ.get(SNAPSHOT_ENV)
    if not text:
        return default
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{SNAPSHOT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def prometheus_registry(source: MetricsSource, prefix: str = ""):
    from prometheus_client import CollectorRegistry, ProcessCollector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LinkerdCollector(source, prefix))
    ProcessCollector(registry=registry)
    return registry


def choose_prometheus_encoder(accept: str):
    """prometheus_client's choice of format for an Accept header, with one fix.

    prometheus_client (0.26) writes OpenMetrics sample names through the *label-name*
    character check when the escaping is "underscores" (the default), so `rt:client:requests`
    came out as `rt_client_requests` under a `# TYPE rt:client:requests` line. ':' is legal
    in a metric name and every name we emit is a legacy-valid one (metric_name() makes sure),
    for which underscore escaping must be the identity; asking the writer for "allow-utf-8"
    escaping prints exactly that. The content type still says what the client asked for.
    """
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics import exposition as om
    encoder, content_type = choose_encoder(accept)
    if (isinstance(encoder, functools.partial) and encoder.func is om.generate_latest
            and encoder.keywords.get("escaping") == om.UNDERSCORES):
        encoder = functools.partial(encoder.func, *encoder.args,
                                    **{**encoder.keywords, "escaping": om.ALLOWUTF8})
    return encoder, content_type


def prometheus_response(registry, req: AdminRequest) -> AdminResponse:
    encoder, content_type = choose_prometheus_encoder(req.headers.get("accept", ""))
    return AdminResponse(body=encoder(registry), content_type=content_type)


def install(admin: AdminServer, linker: "Linker", *,
            snapshot_interval_s: float | None = None) -> MetricsSource:
    """Serve /admin/metrics.json and each io.l5d.prometheus telemeter's path on `admin`."""
    from fastmesh.config import PrometheusTelemeterConfig

    interval = snapshot_interval_s if snapshot_interval_s is not None else snapshot_interval_from_env()
    source = MetricsSource(linker.arena, list(linker.routers), interval)
    source.start(linker.loop, admin)

    def metrics_json(req: AdminRequest) -> AdminResponse:
        return metrics_json_response(source.tree(), req)

    admin.add("/admin/metrics.json", metrics_json, "diagnostics")

    for telemeter in linker.config.telemetry:
        if isinstance(telemeter, PrometheusTelemeterConfig):
            registry = prometheus_registry(source, telemeter.prefix)

            def prometheus(req: AdminRequest, registry=registry) -> AdminResponse:
                return prometheus_response(registry, req)

            admin.add(telemeter.path, prometheus, "diagnostics")
    return source
