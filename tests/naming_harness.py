"""Shared harness for the naming tests that drive a real fastmesh (issue 3).

* an echo backend: a tiny keep-alive HTTP/1.1 server that answers every request with
  JSON ``{"name": <its name>, "method", "target", "headers": [[name, value], ...]}`` so a
  test sees which backend served a request and exactly which headers reached the app.
  It runs in-process (:func:`serve_echo`) or as a process (``python naming_harness.py
  echo --listen IP:PORT --name v1``, e.g. inside a network-namespace node);
* a keep-alive HTTP/1.1 client on asyncio streams (:class:`HttpConn`) and a bounded load
  generator over a few concurrent connections (:func:`run_load`);
* starting ``fastmesh run`` as a real process on free loopback ports and stopping it by PID
  (:class:`FastmeshProcess`).

Everything is bounded: every wait has a deadline, every loop a count or time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).resolve()
REQUEST_TIMEOUT_S = 10.0


def free_port(ip: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def fastmesh_argv(*args: str) -> list[str]:
    """The real CLI, from this checkout's virtualenv (the interpreter running the tests)."""
    return [sys.executable, "-m", "fastmesh", *args]


# --- the CLI, many invocations at once ---------------------------------------------------------------

CLI_PARALLEL = max(2, min(8, (os.cpu_count() or 2) + 1))
_cli_results: dict[tuple[str, ...], subprocess.CompletedProcess] = {}


def run_cli_many(argvs: list[tuple[str, ...]], timeout: float = 120.0) -> None:
    """Run `fastmesh <argv>` for every argv, a few at a time (each start costs ~0.3 s of
    imports), and keep the results for :func:`cli_result`."""
    todo = [a for a in dict.fromkeys(argvs) if a not in _cli_results]
    running: list = []
    deadline = time.monotonic() + timeout
    while (todo or running) and time.monotonic() < deadline:
        while todo and len(running) < CLI_PARALLEL:
            argv = todo.pop(0)
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            proc = subprocess.Popen(fastmesh_argv(*argv), stdout=out, stderr=err, text=True,
                                    cwd=REPO, stdin=subprocess.DEVNULL)
            running.append((argv, proc, out, err))
        for item in list(running):
            argv, proc, out, err = item
            if proc.poll() is None:
                continue
            out.seek(0)
            err.seek(0)
            _cli_results[argv] = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
            out.close()
            err.close()
            running.remove(item)
        time.sleep(0.005)
    for argv, proc, out, err in running:  # only when the deadline passed
        proc.kill()
        proc.wait()
        _cli_results[argv] = subprocess.CompletedProcess(argv, -9, "", "killed: took too long")


def cli_result(*args: str) -> subprocess.CompletedProcess:
    """`fastmesh <args>`'s outcome (from :func:`run_cli_many`, or run now)."""
    if args not in _cli_results:
        run_cli_many([args])
    return _cli_results[args]


# --- echo backend -------------------------------------------------------------------------------


async def _echo_conn(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = []
            length = 0
            close = False
            for line in lines[1:]:
                if not line:
                    continue
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                headers.append([k, v])
                if k.lower() == "content-length":
                    length = int(v)
                elif k.lower() == "connection" and v.lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
            body = json.dumps({"name": name, "method": method, "target": target,
                               "headers": headers}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n%s\r\n" % (len(body), b"Connection: close\r\n" if close else b"")
                         + body)
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


async def serve_echo(ip: str, port: int, name: str) -> asyncio.AbstractServer:
    """Start an echo backend on the running loop."""
    return await asyncio.start_server(lambda r, w: _echo_conn(name, r, w), ip, port, backlog=512)


def echo_process_argv(ip: str, port: int, name: str) -> list[str]:
    return [sys.executable, str(HARNESS), "echo", "--listen", f"{ip}:{port}", "--name", name]


# --- client ---------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self):
        return json.loads(self.body)

    @property
    def backend(self) -> str | None:
        """Which echo backend answered (None for a proxy-generated response)."""
        if self.status != 200:
            return None
        return self.json().get("name")

    def app_headers(self) -> dict[str, list[str]]:
        """Headers the echo backend received, lowercased name → values."""
        out: dict[str, list[str]] = {}
        for k, v in self.json()["headers"]:
            out.setdefault(k.lower(), []).append(v)
        return out


class HttpConn:
    """One keep-alive HTTP/1.1 client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, ip: str, port: int) -> "HttpConn":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), REQUEST_TIMEOUT_S)
        return cls(reader, writer)

    async def request(self, target: str, *, host: str, headers: dict[str, str] | None = None,
                      method: str = "GET") -> Response:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return await asyncio.wait_for(self._read_response(), REQUEST_TIMEOUT_S)

    async def _read_response(self) -> Response:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip(), v.strip()))
        resp = Response(status, headers, b"")
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            parts = []
            for _ in range(100_000):
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            resp.body = b"".join(parts)
        else:
            length = int(resp.header("content-length") or 0)
            resp.body = await self.reader.readexactly(length) if length else b""
        return resp

    def close(self) -> None:
        self.writer.close()


async def get_once(ip: str, port: int, target: str, *, host: str,
                   headers: dict[str, str] | None = None) -> Response:
    conn = await HttpConn.open(ip, port)
    try:
        return await conn.request(target, host=host, headers=headers)
    finally:
        conn.close()


@dataclass
class Sample:
    """One request of a load run: when it was sent and answered (monotonic), and how."""
    sent: float
    done: float
    status: int
    backend: str | None
    error: str | None = None


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.status != 200]


async def run_load(ip: str, port: int, *, host: str, connections: int, max_requests: int,
                   max_seconds: float, stop: asyncio.Event | None = None,
                   target: str = "/") -> LoadResult:
    """Keep `connections` keep-alive clients busy until `max_requests` were sent, `max_seconds`
    passed, or `stop` is set. A connection error is recorded as status 0 (a failure)."""
    result = LoadResult()
    deadline = time.monotonic() + max_seconds
    budget = [max_requests]

    async def worker() -> None:
        conn = await HttpConn.open(ip, port)
        try:
            while budget[0] > 0 and time.monotonic() < deadline and not (stop and stop.is_set()):
                budget[0] -= 1
                sent = time.monotonic()
                try:
                    resp = await conn.request(target, host=host)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                    result.samples.append(Sample(sent, time.monotonic(), 0, None, repr(exc)))
                    conn.close()
                    conn = await HttpConn.open(ip, port)
                    continue
                result.samples.append(Sample(sent, time.monotonic(), resp.status, resp.backend,
                                             None if resp.status == 200 else resp.header("l5d-err")))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return result


# --- fastmesh as a process ------------------------------------------------------------------------


def simple_config(*, admin_port: int, router_port: int, fs_dir: Path, dtab: str = "/svc => /#/io.l5d.fs;",
                  extra_routers: str = "") -> str:
    """One plain outgoing-style router on loopback over an io.l5d.fs directory."""
    return f"""\
admin:
  ip: 127.0.0.1
  port: {admin_port}
namers:
- kind: io.l5d.fs
  rootDir: {fs_dir}
routers:
- protocol: http
  label: out
  dtab: |
    {dtab}
  servers:
  - ip: 127.0.0.1
    port: {router_port}
{extra_routers}"""


class FastmeshProcess:
    """`fastmesh run CONFIG` on loopback, up once admin answers /admin/ping; stopped by PID."""

    def __init__(self, config_path: Path, admin_port: int, log_path: Path,
                 run_args: tuple[str, ...] = ()):
        self.config_path = config_path
        self.admin_port = admin_port
        self.log_path = log_path
        self.run_args = run_args
        self.proc: subprocess.Popen | None = None

    def metrics(self) -> dict:
        """The flat /admin/metrics.json."""
        status, _, body = admin_request("127.0.0.1", self.admin_port, "GET", "/admin/metrics.json")
        assert status == 200, body
        return json.loads(body)

    def __enter__(self) -> "FastmeshProcess":
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(fastmesh_argv("run", *self.run_args, str(self.config_path)),
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastmesh exited {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                status, _, _ = admin_request("127.0.0.1", self.admin_port, "GET", "/admin/ping")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"fastmesh did not come up: {self.log_path.read_text()}")

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)
        self.log.close()


def stop_process(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM one process we started (by PID), SIGKILL after `grace`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def admin_request(ip: str, port: int, method: str, target: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None,
                  timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


async def wait_until_async(predicate: Callable[[], Awaitable[bool]], timeout: float,
                           interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return await predicate()


def write_atomically(path: Path, text: str) -> None:
    """Replace a file's content in one rename (a hidden temp name the fs namer skips)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- `python naming_harness.py echo ...` ------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="naming_harness.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo", help="run an echo backend until SIGTERM")
    e.add_argument("--listen", required=True, help="IP:PORT")
    e.add_argument("--name", required=True)
    args = p.parse_args(argv)
    ip, _, port = args.listen.rpartition(":")
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(serve_echo(ip, int(port), args.name))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    server.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
