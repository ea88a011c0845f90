"""Metrics counted in C, read at scrape time: /admin/metrics.json and the Prometheus endpoint.

The rules under test come from spec §8.2 (scope names, flat/tree/pretty/q, 60 s stat
snapshots) and §8.3 (label rewriting, stat lines). Counting is checked end to end: a real
`fastmesh run` process, a real backend answering chosen status codes, exact request,
status, byte and connection numbers compared with what the test itself sent and received.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from fastmesh._core.stats import CODE_BASE, HIST_BASE, NBUCKETS, StatsArena, bucket_bounds_us
from fastmesh.admin import metrics as m
from tests.support import CaptureBackend, FastmeshProcess, free_port, wait_port


# ---- helpers shared with the other metrics/dashboard tests -------------------------------

class StatusBackend(CaptureBackend):
    """A backend where `GET /status/NNN` answers status NNN and anything else 200
    (keep-alive, Content-Length bodies); counts the requests it answered per status."""

    def __init__(self, host: str = "127.0.0.1"):
        self.answered: dict[int, int] = {}
        self._lock = threading.Lock()
        super().__init__(host=host, handler=self._answer)

    def _answer(self, request: bytes) -> bytes:
        target = request.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        match = re.fullmatch(r"/status/(\d{3})", target)
        status = int(match.group(1)) if match else 200
        body = f"status {status}\n".encode()
        with self._lock:
            self.answered[status] = self.answered.get(status, 0) + 1
        return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request on a keep-alive socket; return the exact bytes of its response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("response body cut short")
        body += chunk
    assert len(body) == length, "one response at a time: nothing may follow the body"
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def http_get(url: str, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metrics_json(admin_port: int, query: str = "") -> dict:
    status, _, body = http_get(f"http://127.0.0.1:{admin_port}/admin/metrics.json{query}")
    assert status == 200, body
    return json.loads(body)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def parse_exposition(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} through prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def proxy_config(backend_port: int, port: int, *,
                 telemetry: str | None = "- kind: io.l5d.prometheus") -> str:
    """Router `outgoing` on `port`: /svc/alpha and /svc/beta both go to the backend."""
    block = f"telemetry:\n{telemetry}\n" if telemetry is not None else ""
    return f"""
admin: {{ip: 127.0.0.1, port: {{admin}}}}
{block}routers:
- protocol: http
  label: outgoing
  dtab: |
    /svc/alpha => /$/inet/127.0.0.1/{backend_port};
    /svc/beta  => /$/inet/127.0.0.1/{backend_port};
  servers:
  - ip: 127.0.0.1
    port: {port}
"""


# ---- label rewriting and names (spec §8.3), table-driven ---------------------------------

REWRITES = [
    # scope path → (metric name, labels in order)
    (("rt", "incoming", "server", "127.0.0.1/4141", "requests"),
     ("rt:server:requests", [("rt", "incoming"), ("server", "127.0.0.1/4141")])),
    (("rt", "incoming", "service", "svc/foo", "requests"),
     ("rt:service:requests", [("rt", "incoming"), ("service", "svc/foo")])),
    (("rt", "incoming", "client", "#/bar", "requests"),
     ("rt:client:requests", [("rt", "incoming"), ("client", "#/bar")])),
    (("rt", "incoming", "client", "#/bar", "service", "svc/foo", "requests"),
     ("rt:client:service:requests", [("rt", "incoming"), ("client", "#/bar"), ("service", "svc/foo")])),
    (("rt", "incoming", "service", "#/foo", "failures", "bar", "qux"),
     ("rt:service:failures", [("rt", "incoming"), ("service", "#/foo"), ("exception", "bar:qux")])),
    (("rt", "outgoing", "client", "#/x", "failures", "Timeout"),
     ("rt:client:failures", [("rt", "outgoing"), ("client", "#/x"), ("exception", "Timeout")])),
    (("rt", "outgoing", "server", "0.0.0.0/4140", "exn", "java.io.IOException"),
     ("rt:server:exceptions", [("rt", "outgoing"), ("server", "0.0.0.0/4140"),
                               ("exception", "java.io.IOException")])),
    (("rt", "foo", "non_stack_match", "bar", "exception", "quux"),
     ("rt:non_stack_match:bar:exception:quux", [("rt", "foo")])),
    (("rt", "outgoing", "client", "%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/world-v1",
      "status", "5XX"),
     ("rt:client:status:5XX", [("rt", "outgoing"), ("client",
      "%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/world-v1")])),
    (("rt", "outgoing", "bindcache", "path", "misses"),
     ("rt:bindcache:path:misses", [("rt", "outgoing")])),
    (("jvm", "uptime"), ("jvm:uptime", [])),
    # a router literally named "service": rule 1 takes it, rule 2 then sees the scope kind
    (("rt", "service", "server", "1.2.3.4/80", "requests"),
     ("rt:server:requests", [("rt", "service"), ("server", "1.2.3.4/80")])),
]


@pytest.mark.parametrize("path,expected", REWRITES, ids=["/".join(p) for p, _ in REWRITES])
def test_label_rewriting_follows_linkerd_rules(path, expected):
    elements, labels = m.prometheus_name(path)
    assert (m.metric_name("", elements), labels) == expected


@pytest.mark.parametrize("prefix,elements,expected", [
    ("linkerd_", ["rt", "server", "requests"], "linkerd_rt:server:requests"),
    ("", ["rt", "client", "status", "2XX"], "rt:client:status:2XX"),
    ("my-mesh.", ["rt", "client", "retries", "requeues"], "my_mesh_rt:client:retries:requeues"),
    ("", ["rt", "transformer", "io.l5d.port", "x"], "rt:transformer:io_l5d_port:x"),
    ("", ["namer", "#/io.l5d.fs", "lookups"], "namer:__io_l5d_fs:lookups"),
])
def test_metric_names_replace_disallowed_characters(prefix, elements, expected):
    assert m.metric_name(prefix, elements) == expected


# ---- histogram estimates and windows ------------------------------------------------------

BOUNDS = bucket_bounds_us()


def _hist(samples_us: list[int]) -> m.Histogram:
    buckets = [0] * NBUCKETS
    for s in samples_us:
        buckets[next(i for i, b in enumerate(BOUNDS) if b >= s)] += 1
    return m.Histogram(buckets, sum(samples_us))


def _bucket_edges(value_us: float) -> tuple[int, int]:
    i = next(i for i, b in enumerate(BOUNDS) if b >= value_us)
    return (BOUNDS[i - 1] if i else 0), BOUNDS[i]


def test_one_sample_reads_exactly_at_every_quantile():
    h = _hist([1234])
    for q in (0.0, 0.5, 0.99, 1.0):
        assert h.quantile_us(q) == 1234


def test_quantiles_land_in_the_bucket_that_holds_the_rank():
    samples = [100] * 50 + [1000] * 40 + [20_000] * 9 + [500_000]
    h = _hist(samples)
    for q, true_value in ((0.5, 100), (0.9, 1000), (0.95, 20_000), (0.999, 500_000)):
        lo, hi = _bucket_edges(true_value)
        assert lo <= h.quantile_us(q) <= hi, q
    qs = [h.quantile_us(q) for q in (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)]
    assert qs == sorted(qs)
    assert h.quantile_us(0.0) <= 100 and h.quantile_us(1.0) >= 500_000
    assert m.Histogram([0] * NBUCKETS, 0).quantile_us(0.5) is None


def test_windows_are_absent_before_the_first_snapshot_then_cover_one_interval():
    arena = StatsArena(16)
    key = '{"client":"/#/io.l5d.fs/world","kind":"client","rt":"outgoing"}'
    blk = arena.alloc(key)

    def record(us: int) -> None:
        i = next(i for i, b in enumerate(BOUNDS) if b >= us)
        blk.add(HIST_BASE + i)
        blk.add_named("latency_count")
        blk.add_named("latency_sum_us", us)

    windows = m.LatencyWindows(60)
    record(2000)
    assert windows.window(key) is None                    # linkerd: no snapshot yet
    windows.roll(arena.snapshot())
    assert windows.window(key).count == 1 and windows.window(key).sum_us == 2000
    record(3000)
    record(3000)
    assert windows.window(key).count == 1                 # still the previous window
    windows.roll(arena.snapshot())
    assert windows.window(key).count == 2 and windows.window(key).sum_us == 6000
    windows.roll(arena.snapshot())
    assert windows.window(key).count == 0                 # an empty window

    # the same windows rendered both ways
    tree = m.build_tree(arena.snapshot(), windows)
    flat = m.flat_json(tree)
    name = "rt/outgoing/client/#/io.l5d.fs/world/request_latency_ms"
    assert flat[name + ".count"] == 0 and name + ".p50" not in flat


def test_a_second_block_with_the_same_key_is_summed():
    # --workers N: each worker allocates its own block for a scope; the admin sums them
    arena = StatsArena(16)
    key = '{"kind":"server","rt":"incoming","server":"0.0.0.0/4141"}'
    a, b = arena.alloc(key), arena.alloc(key)
    a.add_named("requests", 3)
    b.add_named("requests", 4)
    b.add(CODE_BASE + 404 - 100, 2)
    flat = m.flat_json(m.build_tree(arena.snapshot(), None))
    assert flat["rt/incoming/server/0.0.0.0/4141/requests"] == 7
    assert flat["rt/incoming/server/0.0.0.0/4141/status/404"] == 2
    assert "rt/incoming/server/0.0.0.0/4141/status/200" not in flat


# ---- end to end: exact counting through a real proxy --------------------------------------

@pytest.fixture(scope="module")
def counted():
    """A proxy with two services on one backend, after a known mix of requests."""
    backend = StatusBackend()
    port = free_port()
    plan = ([("alpha", 200)] * 23 + [("alpha", 503)] * 5 + [("beta", 200)] * 9
            + [("beta", 404)] * 4 + [("beta", 500)] * 3 + [("alpha", 201)] * 2)
    with FastmeshProcess(proxy_config(backend.port, port),
                         env={m.SNAPSHOT_ENV: "1"}) as fm:
        sent = received = 0
        statuses: list[tuple[str, int]] = []
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        for i, (host, code) in enumerate(plan):
            target = "/" if code == 200 else f"/status/{code}"
            req = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n".encode()
            resp = exchange(socks[i % 3], req)
            sent += len(req)
            received += len(resp)
            statuses.append((host, status_of(resp)))
        # a name the dtab does not know: fastmesh answers 502 itself (each on a connection
        # of its own: the core closes the connection after a routing error)
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                req = b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n"
                resp = exchange(s, req)
                sent += len(req)
                received += len(resp)
                assert status_of(resp) == 502
        srv = f"rt/outgoing/server/127.0.0.1/{port}"
        open_before_close = wait_until(
            lambda: (f := metrics_json(fm.admin_port))[f"{srv}/connections"] == 3.0 and f,
            what="the two error connections to close")
        for s in socks:
            s.close()
        yield {"fm": fm, "port": port, "plan": plan, "statuses": statuses, "sent": sent,
               "received": received, "backend": backend, "open": open_before_close,
               "server": srv,
               "client": f"rt/outgoing/client/$/inet/127.0.0.1/{backend.port}"}
    backend.close()


def test_the_backend_answered_what_was_planned(counted):
    # sanity of the setup itself: every planned status came back through the proxy
    assert [code for _, code in counted["statuses"]] == [code for _, code in counted["plan"]]


def test_server_scope_counts_every_request_exactly(counted):
    flat = metrics_json(counted["fm"].admin_port)
    srv, plan = counted["server"], counted["plan"]
    total = len(plan) + 2                                    # + the two 502s fastmesh wrote
    fails = sum(1 for _, c in plan if c >= 500) + 2
    assert flat[f"{srv}/requests"] == total
    assert flat[f"{srv}/success"] == total - fails
    assert flat[f"{srv}/failures"] == fails
    assert flat[f"{srv}/error_responses"] == 2
    assert flat[f"{srv}/pending"] == 0.0
    for code in (200, 201, 404, 500, 502, 503):
        expected = sum(1 for _, c in plan if c == code) + (2 if code == 502 else 0)
        assert flat[f"{srv}/status/{code}"] == expected, code
    assert flat[f"{srv}/status/2XX"] == sum(1 for _, c in plan if c < 300)
    assert flat[f"{srv}/status/4XX"] == 4
    assert flat[f"{srv}/status/5XX"] == fails
    assert f"{srv}/status/3XX" not in flat and f"{srv}/status/error" not in flat
    # bytes: exactly what crossed the client's sockets
    assert flat[f"{srv}/received_bytes"] == counted["sent"]
    assert flat[f"{srv}/sent_bytes"] == counted["received"]


def test_connections_are_counted_and_closed(counted):
    fm, srv = counted["fm"], counted["server"]
    assert counted["open"][f"{srv}/connections"] == 3.0      # 3 keep-alive sockets open
    assert counted["open"][f"{srv}/connects"] == 5 and counted["open"][f"{srv}/closes"] == 2
    flat = wait_until(lambda: (f := metrics_json(fm.admin_port))[f"{srv}/closes"] == 5 and f,
                      what="the closes to be counted")
    assert flat[f"{srv}/connects"] == 5 and flat[f"{srv}/connections"] == 0.0


def test_client_and_service_scopes_count_forwarded_requests(counted):
    flat = metrics_json(counted["fm"].admin_port)
    cli, plan = counted["client"], counted["plan"]
    assert flat[f"{cli}/requests"] == len(plan)
    assert flat[f"{cli}/failures"] == sum(1 for _, c in plan if c >= 500)
    assert flat[f"{cli}/success"] == sum(1 for _, c in plan if c < 500)
    assert flat[f"{cli}/status/503"] == 5 and flat[f"{cli}/status/404"] == 4
    assert flat[f"{cli}/status/201"] == 2 and f"{cli}/status/502" not in flat
    # each request took a pooled connection or opened one; every open one is still pooled
    assert flat[f"{cli}/pool_hits"] + flat[f"{cli}/pool_misses"] == len(plan)
    assert flat[f"{cli}/connects"] == flat[f"{cli}/pool_misses"] >= 1
    assert flat[f"{cli}/connections"] == float(flat[f"{cli}/connects"] - flat[f"{cli}/closes"])
    assert flat[f"{cli}/connect_failures"] == 0 and flat[f"{cli}/tls_handshakes"] == 0
    for svc in ("alpha", "beta"):
        mine = [c for h, c in plan if h == svc]
        base = f"rt/outgoing/service/svc/{svc}"
        assert flat[f"{base}/requests"] == len(mine)
        assert flat[f"{base}/failures"] == sum(1 for c in mine if c >= 500)
        assert flat[f"{base}/pending"] == 0.0
    assert counted["backend"].answered == {c: sum(1 for _, x in plan if x == c) for _, c in plan}


def test_prometheus_shows_the_same_numbers_with_linkerd_labels(counted):
    fm, plan, port = counted["fm"], counted["plan"], counted["port"]
    status, headers, body = http_get(f"http://127.0.0.1:{fm.admin_port}/admin/metrics/prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = parse_exposition(body.decode())
    bport = counted["backend"].port

    def val(name, **labels):
        return samples[(name, frozenset(labels.items()))]

    server = {"rt": "outgoing", "server": f"127.0.0.1/{port}"}
    client = {"rt": "outgoing", "client": f"$/inet/127.0.0.1/{bport}"}
    assert val("rt:server:requests", **server) == len(plan) + 2
    assert val("rt:client:requests", **client) == len(plan)
    assert val("rt:client:status:503", **client) == 5
    assert val("rt:client:status:5XX", **client) == 8
    assert val("rt:service:requests", rt="outgoing", service="svc/alpha") == 30
    assert val("rt:service:requests", rt="outgoing", service="svc/beta") == 16
    assert val("rt:server:connections", **server) in (0.0, 3.0)
    # the cumulative histogram counts every request once, buckets are cumulative
    assert val("rt:client:request_latency_seconds_count", **client) == len(plan)
    assert val("rt:client:request_latency_seconds_bucket", le="+Inf", **client) == len(plan)
    les = sorted((float(dict(lbl)["le"]), v) for (n, lbl), v in samples.items()
                 if n == "rt:client:request_latency_seconds_bucket" and dict(lbl)["client"] == client["client"])
    assert [v for _, v in les] == sorted(v for _, v in les)
    assert 0 < val("rt:client:request_latency_seconds_sum", **client) < 10 * len(plan)
    assert val("jvm:uptime") > 0


def test_openmetrics_when_asked_keeps_linkerd_names(counted):
    fm = counted["fm"]
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = http_get(f"http://127.0.0.1:{fm.admin_port}/admin/metrics/prometheus",
                                     headers={"Accept": accept})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert re.search(r'^rt:client:requests\{client="\$/inet/127\.0\.0\.1/\d+",rt="outgoing"\} 46\.0$',
                     text, re.M), text[:2000]
    assert "rt_client_requests" not in text
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"rt:client:requests", "rt:server:requests", "rt:client:request_latency_seconds"} <= names


def test_metrics_json_forms(counted):
    fm, srv = counted["fm"], counted["server"]
    port = fm.admin_port
    flat = metrics_json(port)
    # counters are integers, gauges floats
    assert isinstance(flat[f"{srv}/requests"], int) and isinstance(flat[f"{srv}/pending"], float)
    status, headers, body = http_get(f"http://127.0.0.1:{port}/admin/metrics.json")
    assert headers["Content-Type"].startswith("application/json") and b"\n" not in body
    # pretty: sorted keys, indented, same content (counters may not move: no traffic now)
    status, _, body = http_get(f"http://127.0.0.1:{port}/admin/metrics.json?pretty=1")
    pretty = json.loads(body)
    assert list(pretty) == sorted(pretty) and b"\n  " in body
    # tree: nested objects, values under "counter"/"gauge"/"stat.*"
    tree = metrics_json(port, "?tree=1")
    node = tree["rt"]["outgoing"]["server"][f"127.0.0.1/{counted['port']}"]
    assert node["requests"] == {"counter": flat[f"{srv}/requests"]}
    assert node["pending"] == {"gauge": 0.0}
    # q: a subtree; scope elements containing '/' are reachable too
    sub = metrics_json(port, f"?q=rt/outgoing/server/127.0.0.1/{counted['port']}")
    assert sub["requests"] == flat[f"{srv}/requests"] and "status/200" in sub
    sub = metrics_json(port, "?q=rt/outgoing/service&tree=1")
    assert set(sub) == {"svc/alpha", "svc/beta"}
    status, _, body = http_get(f"http://127.0.0.1:{port}/admin/metrics.json?q=rt/nope")
    assert status == 404 and body == b'{"error": "No such subtree: rt/nope"}'


def test_latency_stats_follow_linkerd_snapshots(counted):
    # FASTMESH_HISTOGRAM_SNAPSHOT_S=1 here. Traffic stopped when the fixture ended, so
    # after two more windows the last one is empty: count 0 and nothing else (spec §8.2),
    # and Prometheus prints no stat lines for it.
    fm, srv = counted["fm"], counted["server"]
    time.sleep(2.2)
    flat = metrics_json(fm.admin_port)
    assert flat[f"{srv}/request_latency_ms.count"] == 0
    assert f"{srv}/request_latency_ms.p50" not in flat
    _, _, body = http_get(f"http://127.0.0.1:{fm.admin_port}/admin/metrics/prometheus")
    assert "rt:server:request_latency_ms{" not in body.decode()
    assert "rt:server:request_latency_ms_count" not in body.decode()


def test_latency_stats_during_traffic_have_linkerd_fields():
    backend = StatusBackend()
    port = free_port()
    with FastmeshProcess(proxy_config(backend.port, port), env={m.SNAPSHOT_ENV: "0.5"}) as fm:
        srv = f"rt/outgoing/server/127.0.0.1/{port}"
        flat0 = metrics_json(fm.admin_port)
        assert not any(k.startswith(f"{srv}/request_latency_ms") for k in flat0)  # no snapshot yet
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            deadline = time.monotonic() + 10
            flat = {}
            while time.monotonic() < deadline:
                exchange(s, b"GET / HTTP/1.1\r\nHost: alpha\r\n\r\n")
                flat = metrics_json(fm.admin_port)
                if flat.get(f"{srv}/request_latency_ms.count", 0) >= 3:
                    break
            name = f"{srv}/request_latency_ms"
            keys = [k[len(name) + 1:] for k in flat if k.startswith(name + ".")]
            assert keys == ["count", "max", "min", "p50", "p90", "p95", "p99", "p9990", "p9999",
                            "sum", "avg"]
            assert all(isinstance(flat[f"{name}.{k}"], int) for k in keys if k != "avg")
            assert isinstance(flat[f"{name}.avg"], float)
            assert flat[f"{name}.min"] <= flat[f"{name}.p50"] <= flat[f"{name}.p99"] <= flat[f"{name}.max"]
            _, _, body = http_get(f"http://127.0.0.1:{fm.admin_port}/admin/metrics/prometheus")
            text = body.decode()
            for q in ("0", "0.5", "0.9", "0.95", "0.99", "0.999", "0.9999", "1"):
                assert re.search(r'^rt:server:request_latency_ms\{quantile="%s",rt="outgoing",server="127\.0\.0\.1/%d"\} [0-9.e+-]+$'
                                 % (re.escape(q), port), text, re.M), q
            for suffix in ("count", "sum", "avg"):
                assert re.search(r"^rt:server:request_latency_ms_%s\{" % suffix, text, re.M)
    backend.close()


def test_prometheus_endpoint_only_with_the_telemeter_and_its_path_and_prefix():
    backend = StatusBackend()
    port = free_port()
    custom = "- kind: io.l5d.prometheus\n  path: /metrics\n  prefix: linkerd_"
    with FastmeshProcess(proxy_config(backend.port, port, telemetry=custom)) as fm:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert status_of(exchange(s, b"GET / HTTP/1.1\r\nHost: beta\r\n\r\n")) == 200
        status, _, body = http_get(f"http://127.0.0.1:{fm.admin_port}/metrics")
        assert status == 200
        samples = parse_exposition(body.decode())
        key = ("linkerd_rt:server:requests", frozenset({"rt": "outgoing", "server": f"127.0.0.1/{port}"}.items()))
        assert samples[key] == 1
        assert ("linkerd_jvm:uptime", frozenset()) in samples
        assert not any(name.startswith("rt:") for name, _ in samples)
        assert http_get(f"http://127.0.0.1:{fm.admin_port}/admin/metrics/prometheus")[0] == 404
    with FastmeshProcess(proxy_config(backend.port, port, telemetry=None)) as fm:
        assert http_get(f"http://127.0.0.1:{fm.admin_port}/admin/metrics/prometheus")[0] == 404
        assert metrics_json(fm.admin_port)[f"rt/outgoing/server/127.0.0.1/{port}/requests"] == 0
    backend.close()


@pytest.mark.slow
def test_workers_share_one_arena_and_one_scrape_sums_them():
    backend = StatusBackend()
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "config.yaml")
        with open(cfg, "w") as f:
            f.write(proxy_config(backend.port, port).replace("{admin}", str(admin)))
        log = open(os.path.join(d, "log"), "w")
        proc = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", "--workers", "2", cfg],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port("127.0.0.1", admin, timeout=20)
            wait_port("127.0.0.1", port, timeout=20)
            n = 40
            for _ in range(n):     # one connection each, so SO_REUSEPORT spreads them
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    assert status_of(exchange(s, b"GET / HTTP/1.1\r\nHost: alpha\r\n\r\n")) == 200
            srv = f"rt/outgoing/server/127.0.0.1/{port}"
            # + 1: wait_port's probe connection to the proxy port
            flat = wait_until(lambda: (f := metrics_json(admin))[f"{srv}/closes"] == n + 1 and f,
                              what="all closes")
            assert flat[f"{srv}/requests"] == n and flat[f"{srv}/connects"] == n + 1
            assert flat[f"rt/outgoing/client/$/inet/127.0.0.1/{backend.port}/requests"] == n
            # both workers really served (each allocated its own route on a miss)
            assert flat["rt/outgoing/bindcache/path/misses"] == 2
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            log.close()
    backend.close()
