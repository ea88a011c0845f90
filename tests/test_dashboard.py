"""The admin dashboard: static files and dashboard.json from a real proxy, and the page
itself in headless Chromium (driven over the DevTools protocol with a tiny websocket
client below) while real traffic flows: no console errors, live non-zero request rates
in the DOM, a screenshot in tests/artifacts/.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fastmesh._core.stats import NBUCKETS
from tests.support import FastmeshProcess, free_port, wait_port
from tests.test_metrics import StatusBackend, exchange, http_get, proxy_config, status_of, wait_until

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def proxy():
    backend = StatusBackend()
    port = free_port()
    with FastmeshProcess(proxy_config(backend.port, port)) as fm:
        yield fm, port, backend
    backend.close()


# ---- served files -----------------------------------------------------------------------

def test_dashboard_page_and_files(proxy):
    fm, _, _ = proxy
    base = f"http://127.0.0.1:{fm.admin_port}"
    for path in ("/", "/services", "/?router=outgoing"):
        status, headers, body = http_get(base + path)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'src="files/dashboard.js"' in body and b'href="files/dashboard.css"' in body
    status, headers, body = http_get(base + "/files/dashboard.js")
    assert status == 200 and headers["Content-Type"].startswith("application/javascript")
    assert b"dashboard.json" in body
    assert http_get(base + "/files/dashboard.css")[1]["Content-Type"].startswith("text/css")
    # only the shipped files; unknown dashboard paths are 404 (spec §8.1)
    for path in ("/files/nope.js", "/files/../metrics.py", "/files/%2e%2e/metrics.py",
                 "/dashboard", "/nope"):
        assert http_get(base + path)[0] == 404, path


def test_dashboard_json_is_cumulative_and_exact(proxy):
    fm, port, backend = proxy
    url = f"http://127.0.0.1:{fm.admin_port}/dashboard.json"
    before = json.loads(http_get(url)[2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for i in range(12):
            target = b"/status/500" if i % 4 == 0 else b"/"
            exchange(s, b"GET " + target + b" HTTP/1.1\r\nHost: alpha\r\n\r\n")
        during = json.loads(http_get(url)[2])
    after = json.loads(http_get(url)[2])
    assert len(after["bounds_ms"]) == NBUCKETS and after["bounds_ms"][-1] is None
    assert after["bounds_ms"] == sorted(after["bounds_ms"][:-1]) + [None]
    [r0] = [r for r in before["routers"] if r["label"] == "outgoing"]
    [r1] = [r for r in after["routers"] if r["label"] == "outgoing"]
    assert "/svc/alpha" in r1["dtab"]

    def server(r):
        [s] = r["servers"]
        return s

    assert server(r1)["name"] == f"127.0.0.1/{port}"
    assert server(r1)["requests"] - server(r0)["requests"] == 12
    assert server(r1)["failures"] - server(r0)["failures"] == 3
    assert sum(server(r1)["buckets"]) - sum(server(r0)["buckets"]) == 12
    assert server(r1)["status"]["5XX"] - server(r0)["status"]["5XX"] == 3
    [client] = [c for c in r1["clients"] if c["name"] == f"$/inet/127.0.0.1/{backend.port}"]
    assert client["requests"] >= 12 and client["connections"] >= 1
    [dserver] = [r for r in during["routers"] if r["label"] == "outgoing"][0]["servers"]
    assert dserver["connections"] >= 1                      # our socket was open then
    assert after["time"] > before["time"] and after["uptime_ms"] > 0


def test_dashboard_json_lists_a_clients_endpoints_where_it_was_bound():
    # Endpoints live in the process that bound the name (one event loop; with --workers N
    # the admin parent binds nothing and the page shows counters only).
    import asyncio

    import uvloop

    from fastmesh.admin.dashboard import dashboard_data
    from fastmesh.config import load_config
    from fastmesh.linker import Linker

    backend = StatusBackend()
    port = free_port()
    config = load_config("t.yaml", text=f"""
routers:
- protocol: http
  label: outgoing
  dtab: /svc/world => /$/inet/127.0.0.1/{backend.port};
  servers:
  - {{ip: 127.0.0.1, port: {port}}}
""")

    async def main():
        linker = Linker.build(config, asyncio.get_running_loop())
        await linker.start(admin=False)
        try:
            before = dashboard_data(linker)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: world\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.close()
            return head, before, dashboard_data(linker)
        finally:
            await linker.stop(0.2)

    head, before, after = uvloop.run(main())
    backend.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert before["routers"][0]["clients"] == []
    [client] = after["routers"][0]["clients"]
    assert client["name"] == f"$/inet/127.0.0.1/{backend.port}"
    assert client["endpoints"] == [f"127.0.0.1:{backend.port}"]
    assert client["requests"] == 1 and sum(client["buckets"]) == 1
    assert [s["name"] for s in after["routers"][0]["services"]] == ["svc/world"]


# ---- the page in headless Chromium ------------------------------------------------------

class DevTools:
    """Just enough of a websocket client (RFC 6455) to speak the DevTools protocol."""

    def __init__(self, ws_url: str, timeout: float = 10.0):
        assert ws_url.startswith("ws://")
        hostport, _, path = ws_url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("devtools closed during the handshake")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        assert accept.encode() in head
        self.next_id = 0
        self.events: list[dict] = []

    def _send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("devtools connection closed")
            out += chunk
        return out

    def _recv_message(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._read_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            payload = self._read_exact(n)          # the server does not mask
            if opcode == 9:                        # ping
                self._send(payload, 10)
                continue
            if opcode == 8:
                raise ConnectionError("devtools sent close")
            parts.append(payload)
            if b0 & 0x80:
                return json.loads(b"".join(parts))

    def call(self, method: str, timeout: float = 15.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params}).encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._recv_message()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for ev in self.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", "")[:500])
        return out

    def close(self) -> None:
        self.sock.close()


class Traffic:
    """Steady keep-alive traffic to the proxy from a thread (bounded in time)."""

    def __init__(self, port: int, host: str, every_fourth_fails: bool, max_seconds: float = 60):
        self.port, self.host = port, host
        self.fail = every_fourth_fails
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                target = b"/status/500" if self.fail and self.sent % 4 == 3 else b"/"
                code = status_of(exchange(s, b"GET " + target + b" HTTP/1.1\r\nHost: "
                                          + self.host.encode() + b"\r\n\r\n"))
                self.statuses[code] = self.statuses.get(code, 0) + 1
                self.sent += 1
                time.sleep(0.004)           # ~200 requests/s: steady, not a benchmark

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _stop_browser(browser: subprocess.Popen) -> None:
    """SIGTERM the browser, then its own process group (renderers, zygote), by PID."""
    import signal
    browser.terminate()
    try:
        browser.wait(timeout=10)
    except subprocess.TimeoutExpired:
        browser.kill()
        browser.wait(timeout=5)
    try:
        os.killpg(browser.pid, signal.SIGKILL)   # its session: start_new_session=True
    except ProcessLookupError:
        pass


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make sysdeps installs it)")
def test_dashboard_in_headless_chromium_shows_live_rates(proxy):
    fm, port, backend = proxy
    traffic = Traffic(port, "beta", every_fourth_fails=True)
    devtools_port = free_port()
    profile = tempfile.mkdtemp(prefix="fm-chromium-")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--window-size=1280,1100", f"--user-data-dir={profile}",
         f"--remote-debugging-port={devtools_port}", "--remote-debugging-address=127.0.0.1",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    dt = None
    try:
        wait_port("127.0.0.1", devtools_port, timeout=30)

        def page_target():
            conn = http.client.HTTPConnection("127.0.0.1", devtools_port, timeout=5)
            try:
                conn.request("GET", "/json/list")
                pages = [t for t in json.loads(conn.getresponse().read()) if t.get("type") == "page"]
                return pages[0] if pages else None
            finally:
                conn.close()

        target = wait_until(page_target, timeout=20, interval=0.2, what="a chromium page target")
        dt = DevTools(target["webSocketDebuggerUrl"])
        dt.call("Runtime.enable")
        dt.call("Log.enable")
        dt.call("Page.enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=1100,
                deviceScaleFactor=1, mobile=False)
        dt.call("Page.navigate", url=f"http://127.0.0.1:{fm.admin_port}/?router=outgoing")

        # The page polls once a second; after a few polls the rates are computed.
        # (the page may not have committed yet on a loaded machine: no body, no polls)
        read = ("(() => { if (!document.body) return {polls: 0, lastError: null, router: null,"
                " client: null, canvases: 0, status: ''};"
                " const r = document.querySelector('section.router[data-router=\"outgoing\"]');"
                " const c = document.querySelector('tr.client');"
                " return {polls: +document.body.dataset.polls, lastError: document.body.dataset.lastError || null,"
                " router: r ? Object.assign({}, r.dataset) : null,"
                " client: c ? Object.assign({}, c.dataset) : null,"
                " canvases: document.querySelectorAll('canvas').length,"
                " status: document.getElementById('status').textContent}; })()")
        state = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = dt.evaluate(read)
            if state["polls"] >= 5 and state["router"] and state["router"].get("rps") \
                    and state["client"] and state["client"].get("rps"):
                break
            time.sleep(0.25)
        assert state.get("polls", 0) >= 5, state
        assert state["lastError"] is None, state

        router, client = state["router"], state["client"]
        assert float(router["rps"]) > 10, state           # ~200/s sent
        assert float(client["rps"]) > 10, state
        # a quarter of the requests fail: the per-second success rate shows it
        assert 0.5 < float(router["successRate"]) < 0.95, state
        for key in ("p50Ms", "p95Ms", "p99Ms"):
            assert float(router[key]) > 0, (key, state)
        assert float(router["p50Ms"]) <= float(router["p95Ms"]) <= float(router["p99Ms"])
        assert float(router["connections"]) >= 1
        assert client["client"] == f"$/inet/127.0.0.1/{backend.port}"
        assert state["canvases"] >= 4

        # the delegator panel asks /delegator.json and draws the tree
        dt.evaluate("document.getElementById('dlg-path').value = '/svc/beta';"
                    "document.getElementById('dlg-form').requestSubmit(); true")
        tree = wait_until(lambda: dt.evaluate("document.getElementById('dlg-out').textContent"),
                          timeout=10, interval=0.1, what="the delegator tree")
        assert "leaf" in tree and f"127.0.0.1:{backend.port}" in tree, tree

        shot = dt.call("Page.captureScreenshot", format="png")
        ARTIFACTS.mkdir(exist_ok=True)
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (ARTIFACTS / "dashboard.png").write_bytes(png)
        dt.call("Runtime.evaluate", expression="1")   # collect any late events
        assert dt.errors() == []
    finally:
        traffic.stop()
        if dt is not None:
            dt.close()
        _stop_browser(browser)
        shutil.rmtree(profile, ignore_errors=True)
    assert traffic.statuses.get(500, 0) >= 1 and traffic.statuses.get(200, 0) >= 1
