"""The hello/world sample apps as real processes, called with real curl, hello's calls going
through a small real forward proxy started here (it records what hello sends)."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvloop

from fastmesh.apps import helloworld

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 15.0


def run_async(coro):
    return uvloop.run(asyncio.wait_for(coro, 60))


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any proxy settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy",
                                "target_world", "pod_ip")}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- processes

@dataclass
class App:
    proc: asyncio.subprocess.Process
    port: int
    banner: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 10)


async def start_app(*args: str, **env: str) -> App:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fastmesh.apps.helloworld", *args, cwd=REPO, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)).decode()
    except asyncio.TimeoutError:
        proc.kill()
        raise AssertionError("helloworld did not start: " + (await proc.stderr.read()).decode())
    m = re.fullmatch(r"starting HTTP server on (\S*):(\d+)\n", line)
    if m is None:
        proc.kill()
        raise AssertionError(f"unexpected first line {line!r}: " + (await proc.stderr.read()).decode())
    return App(proc, int(m.group(2)), line.strip())


async def curl(*args: str) -> tuple[int, str]:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-S", "--noproxy", "*", "--max-time", "20", *args, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out.decode()


async def status_and_body(url: str, *args: str) -> tuple[int, str]:
    _, out = await curl("-w", "\n%{http_code}", *args, url)
    body, _, code = out.rpartition("\n")
    return int(code), body


# --------------------------------------------------------------------------- the forward proxy

@dataclass
class Seen:
    request_line: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class RecordingProxy:
    """An HTTP forward proxy: reads a request head, records it, sends it on to
    ``routes[Host]`` in origin form and relays the (Content-Length framed) answer.
    Unknown hosts get a 502, like a linkerd without a route."""

    routes: dict[str, int]
    drop_second_request: bool = False  # close a kept-alive connection instead of answering again
    gzip_answers: bool = False
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            for _ in range(1000):  # requests on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")[:-2]
                headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:]]
                seen = Seen(lines[0], headers)
                if self.drop_second_request and served == 1:
                    return  # as if the idle connection had timed out just now
                self.seen.append(seen)
                served += 1
                await self._forward(seen, writer)
        finally:
            writer.close()

    async def _forward(self, seen: Seen, writer: asyncio.StreamWriter) -> None:
        method, target, version = seen.request_line.split(" ")
        host = seen.header("Host")[0]
        if host not in self.routes:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\nno route")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.routes[host])
        path = urlsplit(target).path or "/"
        rest = "".join(f"{k}: {v}\r\n" for k, v in seen.headers if k.lower() != "accept-encoding")
        up_writer.write(f"{method} {path} {version}\r\n{rest}\r\n".encode("latin-1"))
        resp_head = await up_reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", resp_head).group(1))
        body = await up_reader.readexactly(length)
        up_writer.close()
        status_line = resp_head.split(b"\r\n", 1)[0]
        if self.gzip_answers:
            body = gzip.compress(body)
            writer.write(status_line + b"\r\nContent-Encoding: gzip\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
        else:
            writer.write(status_line + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
        await writer.drain()


# --------------------------------------------------------------------------- the full chain

def test_hello_calls_world_through_the_proxy_with_l5d_ctx_headers():
    async def scenario():
        world = await start_app("-addr=127.0.0.1:0", "-text=ignored", TARGET_WORLD="world", POD_IP="10.0.0.2")
        proxy = RecordingProxy({"world": world.port})
        proxy_port = await proxy.start()
        hello = await start_app("-addr=127.0.0.1:0", "-text=Hello", "-target=world",
                                POD_IP="10.0.0.1", http_proxy=f"127.0.0.1:{proxy_port}")
        try:
            code, body = await status_and_body(
                hello.url, "-H", "l5d-ctx-trace: AAECAwQFBgc=", "-H", "L5d-Ctx-Deadline: 123 456",
                "-H", "l5d-dtab: /svc=>/x", "-H", "X-Other: 1")
            assert (code, body) == (200, "Hello (10.0.0.1) world (10.0.0.2)!!")
            (seen,) = proxy.seen
            assert seen.request_line == "GET http://world/ HTTP/1.1"
            assert seen.header("Host") == ["world"]
            assert seen.header("l5d-ctx-trace") == ["AAECAwQFBgc="]
            assert seen.header("l5d-ctx-deadline") == ["123 456"]
            assert seen.header("l5d-dtab") == [] and seen.header("X-Other") == []
            assert seen.header("Accept-Encoding") == ["gzip"]  # as Go's transport asks

            # Keep-alive on both legs: five requests on one curl connection, and hello
            # reuses its one connection to the proxy.
            _, out = await curl("-w", " %{num_connects}\n", *[hello.url] * 5)
            answers = out.strip().split("\n")
            assert answers == ["Hello (10.0.0.1) world (10.0.0.2)!! " + n for n in "10000"]
            assert proxy.connections == 1
            assert len(proxy.seen) == 6 and all(s.header("l5d-ctx-trace") == [] for s in proxy.seen[1:])
        finally:
            assert await hello.stop() == 0
            assert await world.stop() == 0
            proxy.close()

    run_async(scenario())


def test_world_answers_with_its_text_and_pod_ip():
    async def scenario():
        world = await start_app("--addr", "127.0.0.1:0", "-text", "planet", TARGET_WORLD="world",
                                POD_IP="10.1.2.3")
        plain = await start_app("-addr", "127.0.0.1:0", "--text=earth")
        try:
            _, out = await curl("-i", world.url)
            head, _, body = out.partition("\r\n\r\n")
            assert body == "world (10.1.2.3)!"
            assert head.startswith("HTTP/1.1 200 OK")
            assert "Content-Type: text/plain; charset=utf-8" in head
            assert "Content-Length: 17" in head
            assert await status_and_body(plain.url) == (200, "earth!")
            assert plain.banner == f"starting HTTP server on 127.0.0.1:{plain.port}"
        finally:
            assert await world.stop() == 0
            assert await plain.stop() == 0

    run_async(scenario())


def test_failed_target_calls_answer_503_with_the_reason():
    async def scenario():
        proxy = RecordingProxy({})
        proxy_port = await proxy.start()
        via_proxy = await start_app("-addr=127.0.0.1:0", "-target=nowhere", POD_IP="10.0.0.1",
                                    http_proxy=f"127.0.0.1:{proxy_port}")
        # A port nothing listens on (bound and closed again).
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead_port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        dead_proxy = await start_app("-addr=127.0.0.1:0", "-target=world", http_proxy=f"127.0.0.1:{dead_port}")
        try:
            assert await status_and_body(via_proxy.url) == (503, "invalid response 502\n")
            code, body = await status_and_body(dead_proxy.url)
            assert code == 503
            assert body.startswith('Get "http://world": proxyconnect tcp: dial tcp 127.0.0.1:') and \
                "refused" in body.lower(), body
        finally:
            assert await via_proxy.stop() == 0
            assert await dead_proxy.stop() == 0
            proxy.close()

    run_async(scenario())


def test_loopback_target_goes_direct_as_in_go():
    async def scenario():
        world = await start_app("-addr=127.0.0.1:0", "-text=world")
        proxy = RecordingProxy({"world": world.port})
        proxy_port = await proxy.start()
        hello = await start_app("-addr=127.0.0.1:0", f"-target=127.0.0.1:{world.port}",
                                http_proxy=f"127.0.0.1:{proxy_port}")
        try:
            assert await status_and_body(hello.url) == (200, "Hello world!!")
            assert proxy.seen == []
        finally:
            for app in (hello, world):
                assert await app.stop() == 0
            proxy.close()

    run_async(scenario())


def test_stale_pooled_connection_is_retried_once_on_a_fresh_one():
    async def scenario():
        world = await start_app("-addr=127.0.0.1:0", "-text=world")
        proxy = RecordingProxy({"world": world.port}, drop_second_request=True)
        proxy_port = await proxy.start()
        hello = await start_app("-addr=127.0.0.1:0", "-target=world", http_proxy=f"127.0.0.1:{proxy_port}")
        try:
            for _ in range(3):
                assert await status_and_body(hello.url) == (200, "Hello world!!")
            assert proxy.connections == 3
        finally:
            for app in (hello, world):
                assert await app.stop() == 0
            proxy.close()

    run_async(scenario())


# --------------------------------------------------------------------------- server behaviour

async def raw_exchange(port: int, payload: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send ``payload``, read until the server closes; returns (bytes, seconds taken)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(payload)
    data = await asyncio.wait_for(reader.read(-1), timeout)
    writer.close()
    return data, time.monotonic() - start


def test_pipelined_requests_answer_in_order_and_connection_close_is_honoured():
    async def scenario():
        proxy_target = await start_app("-addr=127.0.0.1:0", "-text=world", POD_IP="10.0.0.2")
        proxy = RecordingProxy({"world": proxy_target.port})
        proxy_port = await proxy.start()
        hello = await start_app("-addr=127.0.0.1:0", "-target=world", http_proxy=f"127.0.0.1:{proxy_port}")
        try:
            for app, body in ((proxy_target, b"world (10.0.0.2)!"), (hello, b"Hello world (10.0.0.2)!!")):
                requests = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                            b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
                data, _ = await raw_exchange(app.port, requests)
                parts = data.split(b"HTTP/1.1 200 OK\r\n")
                assert len(parts) == 4, data
                assert parts[1].endswith(b"\r\n\r\n" + body)
                assert parts[2].endswith(b"\r\n\r\n") and f"Content-Length: {len(body)}".encode() in parts[2]
                assert b"Connection: close" in parts[3] and parts[3].endswith(body)
            # HTTP/1.0 without keep-alive: answered, then closed.
            data, _ = await raw_exchange(proxy_target.port, b"GET / HTTP/1.0\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"world (10.0.0.2)!")
            # Garbage: 400 and closed.
            data, _ = await raw_exchange(proxy_target.port, b"NOT HTTP AT ALL\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 400 Bad Request")
        finally:
            for app in (hello, proxy_target):
                assert await app.stop() == 0
            proxy.close()

    run_async(scenario())


def test_idle_keep_alive_connections_are_closed():
    async def scenario():
        world = await start_app("-addr=127.0.0.1:0", "-text=world", "-idle-timeout=300ms")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", world.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in head
            assert await reader.readexactly(6) == b"world!"
            start = time.monotonic()
            assert await asyncio.wait_for(reader.read(-1), 5) == b""  # closed by the server
            assert 0.2 <= time.monotonic() - start < 3
            writer.close()
        finally:
            assert await world.stop() == 0

    run_async(scenario())


def test_failure_rate_latency_json_and_runtime_settings():
    async def scenario():
        world = await start_app("-addr=127.0.0.1:0", "-text=world", "-failure-rate=1", "-json",
                                "-latency=200ms", POD_IP="10.0.0.9")
        try:
            start = time.monotonic()
            assert await status_and_body(world.url) == (500, "\n")
            assert time.monotonic() - start >= 0.2
            assert await status_and_body(world.url + "setFailureRate?failureRate=0", "-X", "POST") == (200, "ok")
            assert await status_and_body(world.url + "setLatency?latency=1m30s", "-X", "POST") == (200, "ok")
            assert await status_and_body(world.url + "setLatency?latency=0s", "-X", "POST") == (200, "ok")
            assert await status_and_body(world.url) == (200, '{"api_result":"world (10.0.0.9)"}')
            assert await status_and_body(world.url + "setLatency?latency=1") == (405, "POST required\n")
            assert await status_and_body(world.url + "setLatency?latency=soon", "-X", "POST") == \
                (400, "latency is not a valid duration\n")
            assert await status_and_body(world.url + "setFailureRate?failureRate=2", "-X", "POST") == \
                (400, "failureRate must be between 0.0 and 1.0\n")
        finally:
            assert await world.stop() == 0
        out = (await world.proc.stdout.read()).decode()
        assert out.splitlines() == ["set failure rate to 0", "set latency to 1m30s", "set latency to 0s"]

    run_async(scenario())


def test_start_errors_exit_1():
    async def scenario():
        taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = taken.sockets[0].getsockname()[1]
        try:
            for args, words in (([f"-addr=127.0.0.1:{port}"], "address already in use"),
                                (["-addr=127.0.0.1:0", "-protocol=grpc"], "unsupported protocol: grpc"),
                                (["-addr=7777"], "missing port in address"),
                                (["-addr=127.0.0.1:0", "-failure-rate=2"], "between 0.0 and 1.0")):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fastmesh.apps.helloworld", *args, cwd=REPO, env=clean_env(),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                _, err = await asyncio.wait_for(proc.communicate(), 20)
                assert proc.returncode == 1, (args, err)
                assert words in err.decode().lower(), (args, err)
        finally:
            taken.close()

    run_async(scenario())


# --------------------------------------------------------------------------- in process

def test_in_process_serve_decodes_gzip_from_the_proxy():
    async def scenario():
        world = await helloworld.serve("127.0.0.1:0", "world", None, "10.0.0.2", None)
        proxy = RecordingProxy({"world": world.port}, gzip_answers=True)
        proxy_port = await proxy.start()
        hello = await helloworld.serve("127.0.0.1:0", "Hello", "world", "10.0.0.1", f"127.0.0.1:{proxy_port}")
        try:
            assert await status_and_body(f"http://127.0.0.1:{hello.port}/") == \
                (200, "Hello (10.0.0.1) world (10.0.0.2)!!")
            assert proxy.seen[0].request_line == "GET http://world/ HTTP/1.1"
        finally:
            hello.close()
            world.close()
            proxy.close()
            await hello.wait_closed()
            await world.wait_closed()

    run_async(scenario())


def test_presets_give_the_example_defaults():
    import argparse
    for preset, expected in (("hello", (":7777", "Hello", "world")), ("world", (":7778", "world", None)),
                             (None, (":7777", "Hello", None))):
        parser = argparse.ArgumentParser()
        helloworld.add_arguments(parser, preset=preset)
        args = parser.parse_args([])
        assert (args.addr, args.text, args.target) == expected, preset
    parser = argparse.ArgumentParser()
    helloworld.add_arguments(parser, preset="hello")
    args = parser.parse_args(["-addr=:9", "-json=false", "-latency", "1m30s"])
    assert (args.addr, args.json, args.latency) == (":9", False, 90.0)


# --------------------------------------------------------------------------- Go's rules, as tables

@pytest.mark.parametrize("text,seconds", [
    ("0", 0.0), ("300ms", 0.3), ("1.5s", 1.5), ("1m30s", 90.0), ("2h", 7200.0),
    ("10us", 1e-5), ("10µs", 1e-5), ("5ns", 5e-9), ("-1s", -1.0), (".5s", 0.5),
])
def test_go_durations(text, seconds):
    assert helloworld.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s2", "--1s"])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        helloworld.parse_go_duration(text)


@pytest.mark.parametrize("addr,expected", [
    (":7777", (None, 7777)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:80", ("::1", 80)),
    ("localhost:8080", ("localhost", 8080)),
])
def test_listen_addresses(addr, expected):
    assert helloworld.parse_addr(addr) == expected


@pytest.mark.parametrize("host,port,no_proxy,proxied", [
    ("world", 80, None, True),
    ("localhost", 80, None, False),          # Go never proxies localhost ...
    ("127.0.0.1", 7778, None, False),        # ... nor loopback addresses
    ("::1", 80, None, False),
    ("world", 80, "*", False),
    ("world", 80, "hello,world", False),
    ("api.world", 80, "world", False),       # a bare domain covers its subdomains
    ("otherworld", 80, "world", True),
    ("api.world", 80, ".world", False),
    ("world", 80, ".world", False),
    ("world", 8080, "world:80", True),       # an entry with a port matches that port only
    ("world", 80, "world:80", False),
    ("10.1.2.3", 80, "10.0.0.0/8", False),
    ("11.1.2.3", 80, "10.0.0.0/8", True),
])
def test_proxy_choice_follows_go(host, port, no_proxy, proxied):
    got = helloworld.proxy_for(host, port, "node-a:4140", no_proxy)
    assert (got is not None) == proxied
    if proxied:
        assert (got.host, got.port) == ("node-a", 4140)


def test_proxy_url_forms():
    assert helloworld.proxy_for("world", 80, "http://u:p%40ss@node:3128").authorization == \
        b"Basic " + __import__("base64").b64encode(b"u:p@ss")
    assert helloworld.proxy_for("world", 80, "node").port == 80
    with pytest.raises(ValueError, match="not supported"):
        helloworld.proxy_for("world", 80, "socks5://node:1080")
