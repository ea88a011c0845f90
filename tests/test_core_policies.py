"""Service and server policies on the request path: response classifiers with budgeted
retries (spec §9.3, §9.4), totalTimeoutMs / requestAttemptTimeoutMs (§9.5),
maxConcurrentRequests and timestampHeader — through a real `fastmesh run` process."""

import concurrent.futures
import time
import urllib.parse

import pytest

from tests.support import HANG, CaptureBackend, FastmeshProcess, free_port, raw_exchange, response


def _config(backend_port: int, port: int, *, service: str = "", client: str = "",
            server_extra: str = "") -> str:
    return f"""
admin: {{ip: 127.0.0.1, port: {{admin}}}}
routers:
- protocol: http
  dtab: /svc/x => /$/inet/127.0.0.1/{backend_port};
  servers:
  - ip: 127.0.0.1
    port: {port}
{server_extra}
{service}
{client}
"""


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def _header(resp: bytes, name: str) -> str | None:
    for line in resp.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"


@pytest.fixture
def backend():
    b = CaptureBackend()
    yield b
    b.close()


def test_retryable_read_5xx_retries_gets_but_not_posts(backend):
    port = free_port()
    svc = "  service:\n    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"
    with FastmeshProcess(_config(backend.port, port, service=svc)):
        backend.script = [response(500, b"boom"), response(200, b"fine")]
        resp = raw_exchange(port, GET)
        assert _status(resp) == 200 and resp.endswith(b"fine")
        assert len(backend.requests) == 2
        # both attempts carried the same request
        assert backend.requests[0].split(b"\r\n")[0] == backend.requests[1].split(b"\r\n")[0]

        backend.script = [response(500, b"boom"), response(200, b"fine")]
        resp = raw_exchange(port, POST)
        assert _status(resp) == 500 and resp.endswith(b"boom")
        assert _header(resp, "l5d-success-class") == "0.0"
        assert len(backend.requests) == 3


def test_l5d_retryable_header_is_retried_under_the_default_classifier(backend):
    port = free_port()
    with FastmeshProcess(_config(backend.port, port)):
        backend.script = [response(503, b"again", {"l5d-retryable": "true"}), response(200, b"ok")]
        resp = raw_exchange(port, POST)
        assert _status(resp) == 200
        assert len(backend.requests) == 2 and backend.requests[1].endswith(b"abc")
        # without the header a 5xx is final under the default (non-retryable) classifier
        backend.script = [response(503, b"final")]
        assert _status(raw_exchange(port, GET)) == 503


def test_an_empty_budget_allows_no_retry(backend):
    port = free_port()
    svc = ("  service:\n    responseClassifier: {kind: io.l5d.http.retryableRead5XX}\n"
           "    retries:\n      budget: {minRetriesPerSec: 0, percentCanRetry: 0.0}")
    with FastmeshProcess(_config(backend.port, port, service=svc)):
        backend.script = [response(500, b"boom"), response(200, b"fine")]
        assert _status(raw_exchange(port, GET)) == 500
        assert len(backend.requests) == 1


def test_retry_backoff_waits(backend):
    port = free_port()
    svc = ("  service:\n    responseClassifier: {kind: io.l5d.http.retryableAll5XX}\n"
           "    retries:\n      backoff: {kind: constant, ms: 300}")
    with FastmeshProcess(_config(backend.port, port, service=svc)):
        backend.script = [response(502), response(200, b"ok")]
        t0 = time.monotonic()
        assert _status(raw_exchange(port, POST)) == 200
        assert time.monotonic() - t0 >= 0.3


def test_total_timeout_answers_503_with_linkerds_text(backend):
    port = free_port()
    svc = "  service:\n    totalTimeoutMs: 400"
    with FastmeshProcess(_config(backend.port, port, service=svc)):
        backend.script = [HANG]
        t0 = time.monotonic()
        resp = raw_exchange(port, GET, timeout=5)
        took = time.monotonic() - t0
        assert _status(resp) == 503 and 0.35 < took < 3.0
        err = urllib.parse.unquote_plus(_header(resp, "l5d-err"))
        assert err.startswith("exceeded 400.milliseconds to /svc/x while waiting for a response "
                              "for the request, including retries")
        # the connection stays usable afterwards
        assert _status(raw_exchange(port, GET)) == 200


def test_attempt_timeout_is_retried_for_reads(backend):
    port = free_port()
    svc = "  service:\n    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"
    cli = "  client:\n    requestAttemptTimeoutMs: 300"
    with FastmeshProcess(_config(backend.port, port, service=svc, client=cli)):
        backend.script = [HANG, response(200, b"second")]
        resp = raw_exchange(port, GET, timeout=5)
        assert _status(resp) == 200 and resp.endswith(b"second")
        backend.script = [HANG]
        resp = raw_exchange(port, POST, timeout=5)
        assert _status(resp) == 503
        assert "individual request" in urllib.parse.unquote_plus(_header(resp, "l5d-err"))


def test_max_concurrent_requests(backend):
    port = free_port()
    backend.delay = 0.5
    with FastmeshProcess(_config(backend.port, port, server_extra="    maxConcurrentRequests: 1")):
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            first = ex.submit(raw_exchange, port, GET)
            time.sleep(0.15)
            second = ex.submit(raw_exchange, port, GET)
            statuses = sorted([_status(first.result()), _status(second.result())])
        assert statuses == [200, 503]
        assert _status(raw_exchange(port, GET)) == 200


def test_timestamp_header(backend):
    port = free_port()
    with FastmeshProcess(_config(backend.port, port, server_extra="    timestampHeader: x-ts")):
        before = int(time.time() * 1000)
        raw_exchange(port, GET)
        after = int(time.time() * 1000)
        (ts,) = [v for k, v in backend.headers() if k.lower() == "x-ts"]
        assert before <= int(ts) <= after
