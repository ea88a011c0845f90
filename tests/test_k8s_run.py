"""A real `fastmesh run` routing through the io.l5d.k8s namer, fed by the fake API server.

The fake runs on a background event loop of the test process; fastmesh is a child
process talking to it over loopback, and requests are plain HTTP to its router. Covers
the router's side of spec §5.1/§7.2: a name stays pending while the API is unreachable,
the request gets 503 with linkerd's binding-timeout text after `bindingTimeoutMs`; once
the API answers, the name binds; scale to zero → Neg → 502 "Unable to route request!";
an address-only change moves traffic without a re-bind.
"""

from __future__ import annotations

import http.client
import time

import pytest
from e2e import BackgroundLoop, free_port, l5d_err_text, refusing_port, wait_port
from k8s_fake import FakeKubeApi
from k8s_harness import endpoints
from support import CaptureBackend, FastmeshProcess

CONFIG = """\
admin:
  ip: 127.0.0.1
  port: {admin}
namers:
- kind: io.l5d.k8s
  host: 127.0.0.1
  port: {api}
routers:
- protocol: http
  label: outgoing
  bindingTimeoutMs: 700
  dtab: /svc => /#/io.l5d.k8s/default/http;
  servers:
  - port: {port}
    ip: 127.0.0.1
"""


def get(port: int, host: str = "web", timeout: float = 10.0) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/hello", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode("latin-1")
    finally:
        conn.close()


def until(fn, want, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if want(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s; last: {got}")
        time.sleep(0.05)


@pytest.fixture
def loop():
    bg = BackgroundLoop()
    yield bg
    bg.close()


def test_pending_503_then_bound_neg_and_moved(tmp_path, loop):
    holder, api_port = refusing_port()  # the API's port: nothing answers there yet
    backend1, backend2 = CaptureBackend(), CaptureBackend()
    port = free_port()
    # one worker: the namer (and its one watch per object) of one process
    proc = FastmeshProcess(CONFIG.replace("{api}", str(api_port)).replace("{port}", str(port)),
                           workers=1).__enter__()
    fake = None
    try:
        wait_port("127.0.0.1", port, 15, proc.proc)
        t0 = time.monotonic()
        status, headers, body = get(port)
        waited = time.monotonic() - t0
        text = "exceeded 700.milliseconds to unspecified while dyn binding /svc/web. Remote Info: Not Available"
        assert (status, body) == (503, text), (status, body)
        assert l5d_err_text(headers.get("l5d-err")) == text
        assert 0.6 <= waited < 5.0, waited

        # the API comes up (same port): the name binds, requests reach the pod
        holder.close()
        fake = loop.run(FakeKubeApi().start("127.0.0.1", api_port))
        web = endpoints("web", [("127.0.0.1", "node-1")], {"http": backend1.port})
        loop.call(fake.put, "endpoints", web)
        status, _, body = until(lambda: get(port), lambda r: r[0] == 200)
        assert body == "ok" and len(backend1.requests) >= 1

        # scale to zero: Neg → the router re-binds → 502 no route
        loop.call(fake.put, "endpoints", endpoints("web", [], {"http": backend1.port}))
        status, headers, body = until(lambda: get(port), lambda r: r[0] == 502)
        assert body.startswith("Unable to route request!\n\nservice name: /svc/web\n")
        assert l5d_err_text(headers.get("l5d-err")).startswith("Unable to route request!")

        # back, then only the address changes: traffic follows (in place, no re-bind)
        loop.call(fake.put, "endpoints", web)
        until(lambda: get(port), lambda r: r[0] == 200)
        loop.call(fake.put, "endpoints", endpoints("web", [("127.0.0.1", "node-1")], {"http": backend2.port}))
        until(lambda: (get(port), len(backend2.requests))[1], lambda n: n >= 1)
        # one GET and one watch per object, whatever the traffic
        gets = loop.call(lambda: fake.get_count("/endpoints/web"))
        assert gets == 1
        assert proc.proc.poll() is None, proc.log()
    finally:
        proc.__exit__(None, None, None)
        holder.close()
        if fake is not None:
            loop.run(fake.stop())
        backend1.close()
        backend2.close()
