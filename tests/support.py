"""Shared helpers for tests that drive a real `fastmesh run` process over real sockets.

`FastmeshProcess` starts `python -m fastmesh run CONFIG` on free loopback ports and waits
for its admin ping; `CaptureBackend` is a plain TCP server (a thread) that records every
request's raw bytes and answers with a canned response, so a test can assert exactly what
fastmesh forwarded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not open within {timeout}s")
            time.sleep(0.05)


class FastmeshProcess:
    """`fastmesh run` on a config text; `{admin}` in the text is replaced by a free port."""

    def __init__(self, config_text: str, *, admin_port: int | None = None, env: dict | None = None,
                 workers: int = 1):
        self.admin_port = admin_port or free_port()
        self.config_text = config_text.replace("{admin}", str(self.admin_port))
        self.env = env
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fm-test-")
        self.log_path = os.path.join(self._dir.name, "fastmesh.log")

    def __enter__(self) -> "FastmeshProcess":
        cfg = os.path.join(self._dir.name, "config.yaml")
        with open(cfg, "w") as f:
            f.write(self.config_text)
        self.proc = subprocess.Popen([sys.executable, "-m", "fastmesh", "run",
                                      "--workers", str(self.workers), cfg],
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})
        try:
            wait_port("127.0.0.1", self.admin_port, timeout=15)
        except TimeoutError:
            self.__exit__(None, None, None)
            raise RuntimeError(f"fastmesh did not start:\n{self.log()}")
        return self

    def log(self) -> str:
        try:
            return open(self.log_path).read()
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._dir.cleanup()


RESPONSE_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: yes\r\n\r\nok"
HANG = b""   # in a CaptureBackend script: read the request, never answer


def response(status: int, body: bytes = b"", headers: dict | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class CaptureBackend:
    """A threaded TCP server answering each request (head + Content-Length body) with
    `response` and recording the raw request bytes in `requests`."""
    response: bytes = RESPONSE_OK
    host: str = "127.0.0.1"
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    # optional per-request answers, consumed in order (HANG = never answer); when it runs
    # out, `response` is used
    script: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    # optional: compute each answer from the request's bytes (wins over `response`)
    handler: "Callable[[bytes], bytes] | None" = None

    def __post_init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(10)
        try:
            while not self._stop:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                if self.script:
                    answer = self.script.pop(0)
                elif self.handler is not None:
                    answer = self.handler(self.requests[-1])
                else:
                    answer = self.response
                if answer == HANG:
                    while not self._stop and conn.recv(65536):
                        pass
                    return
                if self.delay:
                    time.sleep(self.delay)
                conn.sendall(answer)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def headers(self, index: int = -1) -> list[tuple[str, str]]:
        head = self.requests[index].split(b"\r\n\r\n", 1)[0].decode("latin-1")
        out = []
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            out.append((name, value.strip()))
        return out

    def request_line(self, index: int = -1) -> str:
        return self.requests[index].split(b"\r\n", 1)[0].decode("latin-1")


def raw_exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 5.0,
                 until_close: bool = False) -> bytes:
    """Send raw bytes, read one response (or everything until EOF with until_close)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not until_close and b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(body) >= int(line.split(b":")[1]):
                            return out
        return out
