"""The hello and world sample services of the linkerd DaemonSet examples, as a benchmark backend.

Role in the data path: the applications at both ends. ``hello`` answers a request by
calling ``world`` through the node-local proxy (``http_proxy=$(NODE_NAME):4140``); ``world``
just answers. They behave like the example's ``buoyantio/helloworld`` image (Go,
``E:docker/helloworld``; flags, environment and output taken from its source, the code is
our own):

* flags ``-addr`` (default ``:7777``), ``-text`` (default ``Hello``), ``-target`` (default
  none), ``-latency`` (a Go duration, slept before answering), ``-failure-rate`` (share of
  requests answered 500), ``-json``, ``-protocol`` (only ``http``). ``-addr=:7777``,
  ``-addr :7777`` and ``--addr :7777`` all work.
* env ``TARGET_WORLD`` replaces ``-text``; ``POD_IP`` is shown after the text;
  ``HTTP_PROXY``/``http_proxy`` and ``NO_PROXY``/``no_proxy`` pick the proxy for the call
  to the target with Go's rules (never for ``localhost`` or loopback IPs).
* answer: ``<text>[ (<POD_IP>)][ <target's answer>]!`` as ``text/plain; charset=utf-8``, so
  a full chain answers ``Hello (10.0.0.1) world (10.0.0.2)!!``. A failed target call
  answers 503 with Go's reason (``invalid response 502``, ``Get "http://world": ...``).
* the target call is ``GET http://world/ HTTP/1.1`` with ``Host: world`` (absolute form
  when proxied, as Go's client sends it) and carries every incoming ``l5d-ctx*`` header.
* ``POST /setLatency?latency=50ms`` and ``POST /setFailureRate?failureRate=0.5`` change
  the behaviour at run time.
* idle keep-alive connections are closed after 5 s (Go's ``IdleTimeout`` defaults to the
  example's 5 s ``ReadTimeout``); ``-idle-timeout`` changes it (0 = never).

Deliberate differences: the target call sends ``User-Agent: fastmesh-helloworld`` (not
Go's), does not follow redirects (any non-200 is an error, which is what the example gets
from a proxy anyway) and gives up after 30 s (``-target-timeout``); Go waits forever.

Built for load: uvloop + httptools, keep-alive and pipelining on the server side, a
pool of keep-alive connections to the proxy (or target) on the client side, responses
rendered from cached bytes, and no task per request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import gzip
import ipaddress
import json
import os
import random
import re
import signal
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

__all__ = [
    "PRESETS", "DEFAULT_ADDR", "HelloWorldServer", "serve", "parse_addr", "parse_go_duration",
    "proxy_for", "ProxyAddr", "TargetCallError", "add_arguments", "run", "main",
]

DEFAULT_ADDR = ":7777"
DEFAULT_TEXT = "Hello"
DEFAULT_IDLE_TIMEOUT = 5.0     # s; Go: IdleTimeout falls back to the example's ReadTimeout
DEFAULT_TARGET_TIMEOUT = 30.0  # s; ours (Go's DefaultClient has none)
USER_AGENT = "fastmesh-helloworld/1"

# `fastmesh hello` / `fastmesh world`: the example manifests' arguments.
PRESETS: dict[str, dict[str, Any]] = {
    "hello": {"addr": ":7777", "text": "Hello", "target": "world"},
    "world": {"addr": ":7778", "text": "world", "target": None},
}

# Idle connections to the proxy kept open; more may be open while requests are in flight.
_POOL_MAX_IDLE = 32
# In-flight connections to the proxy; further calls wait for one to come free.
_POOL_MAX_CONNS = 512
# Pipelined requests queued on one connection before we stop reading from it.
_PIPELINE_HIGH = 64
_PIPELINE_LOW = 16
_MAX_BODY = 1 << 20  # a target answer larger than this is refused (it is a hello service)

_TEXT_PLAIN = b"text/plain; charset=utf-8"
_REASONS = {200: b"OK", 400: b"Bad Request", 405: b"Method Not Allowed",
            500: b"Internal Server Error", 503: b"Service Unavailable"}


# --------------------------------------------------------------------------- small parsers

def parse_addr(addr: str) -> tuple[str | None, int]:
    """Go listen address → (host or None for all interfaces, port): ``:7777``,
    ``127.0.0.1:0``, ``[::1]:7777``, ``localhost:80``."""
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        raise ValueError(f"address {addr}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {addr}: invalid port {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {addr}: invalid port {port}")
    return (host or None), port


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """A Go ``time.Duration`` string (``300ms``, ``1.5s``, ``1m30s``, ``0``) in seconds."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def _go_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _go_json(value: dict[str, str]) -> bytes:
    """json.Marshal's output: compact, and <, >, & and U+2028/9 escaped for HTML safety."""
    out = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(ch, esc)
    return out.encode("utf-8")


def _format_go_float(value: float) -> str:
    return repr(value).rstrip("0").rstrip(".") if "." in repr(value) else repr(value)


def _format_go_duration(seconds: float) -> str:
    """As Go prints a time.Duration: 0s, 500ns, 1.5µs, 10ms, 1.5s, 1m30s, 1h0m0s."""
    if seconds == 0:
        return "0s"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 1e-6:
        return f"{sign}{round(seconds * 1e9)}ns"
    if seconds < 1e-3:
        return f"{sign}{round(seconds * 1e6, 3):g}µs"
    if seconds < 1:
        return f"{sign}{round(seconds * 1e3, 6):g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    if hours or minutes:
        out += f"{int(minutes)}m"
    return f"{sign}{out}{round(secs, 9):g}s"


# --------------------------------------------------------------------------- proxy choice

@dataclass(frozen=True)
class ProxyAddr:
    host: str
    port: int
    authorization: bytes | None = None  # Proxy-Authorization value, from user:pass@ in the URL


def _parse_proxy_url(http_proxy: str) -> ProxyAddr:
    url = http_proxy if "://" in http_proxy else "http://" + http_proxy
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"proxy {http_proxy!r}: scheme {parts.scheme!r} is not supported (only http)")
    if not parts.hostname:
        raise ValueError(f"proxy {http_proxy!r}: no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"proxy {http_proxy!r}: invalid port") from None
    auth = None
    if parts.username is not None:
        import base64
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
        auth = b"Basic " + base64.b64encode(cred)
    return ProxyAddr(parts.hostname, port, auth)


def _no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry_port = None
        name, sep, p = entry.rpartition(":")
        if sep and p.isdigit() and not name.endswith("]"):
            entry, entry_port = name, int(p)
        if entry_port is not None and entry_port != port:
            continue
        if entry.startswith("*."):
            entry = entry[1:]
        if entry.startswith("."):
            if host.endswith(entry) or host == entry[1:]:
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def proxy_for(host: str, port: int, http_proxy: str | None,
              no_proxy: str | None = None) -> ProxyAddr | None:
    """Where Go's ``ProxyFromEnvironment`` would send a request for ``http://host:port``:
    None (direct) without a proxy, for ``localhost``/loopback IPs, or when NO_PROXY matches."""
    if not http_proxy:
        return None
    name = host.lower()
    if name == "localhost":
        return None
    try:
        if ipaddress.ip_address(name).is_loopback:
            return None
    except ValueError:
        pass
    if no_proxy and _no_proxy_matches(no_proxy, name, port):
        return None
    return _parse_proxy_url(http_proxy)


# --------------------------------------------------------------------------- responses

class _DateCache:
    """The Date header value, formatted once per second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return self.value


def _render(status: int, body: bytes, date: bytes, keep_alive: bool, http10: bool,
            head_only: bool, extra: bytes = b"") -> bytes:
    conn = b""
    if not keep_alive:
        conn = b"Connection: close\r\n"
    elif http10:
        conn = b"Connection: keep-alive\r\n"
    head = b"".join((
        b"HTTP/1.1 ", str(status).encode(), b" ", _REASONS.get(status, b"Unknown"), b"\r\n",
        b"Content-Length: ", str(len(body)).encode(), b"\r\n",
        b"Content-Type: ", _TEXT_PLAIN, b"\r\n",
        extra, conn,
        b"Date: ", date, b"\r\n\r\n",
    ))
    return head if head_only else head + body


def _error_body(message: str) -> bytes:
    # Go's http.Error: the message plus a newline, and nosniff.
    return (message + "\n").encode("utf-8")


_NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"


# --------------------------------------------------------------------------- target client

class TargetCallError(Exception):
    """The call to the target failed; the message is the reason the 503 answer carries."""


class _Call:
    __slots__ = ("head", "future", "retried")

    def __init__(self, head: bytes, future: asyncio.Future, retried: bool) -> None:
        self.head = head
        self.future = future
        self.retried = retried


class _TargetConn(asyncio.Protocol):
    """One keep-alive connection to the proxy (or the target), one call at a time."""

    def __init__(self, client: "_TargetClient") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.call: _Call | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.reused = False
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.got_bytes = False
        self.headers_done = False
        self.framed = False      # Content-Length or chunked: the end is not the EOF
        self.encoding = b""
        self.status = 0
        self.body: list[bytes] = []
        self.body_len = 0

    # asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._cancel_timer()
        self.client._lost(self)
        call, self.call = self.call, None
        if call is None:
            return
        if self.headers_done and not self.framed:
            self._finish(call)  # the body ends with the connection (no length, not chunked)
        elif self.reused and not self.got_bytes and not call.retried:
            # A pooled connection the other side had already closed: send it again on
            # a fresh one, once (Go's transport does the same for idempotent requests).
            call.retried = True
            self.client._dispatch(call, fresh=True)
        else:
            reason = "EOF" if exc is None else str(exc)
            self.client._fail(call, f"{reason} (connection closed before the response was complete)")

    def data_received(self, data: bytes) -> None:
        if self.call is None:
            # Bytes nobody asked for (or after a timeout): this connection is unusable.
            self.transport.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            call, self.call = self.call, None
            self._cancel_timer()
            self.transport.close()
            if call is not None:
                self.client._fail(call, f"malformed HTTP response ({exc})")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low == b"content-length" or (low == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True
        elif low == b"content-encoding":
            self.encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.body_len > _MAX_BODY:
            raise httptools.HttpParserError(f"response body larger than {_MAX_BODY} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        call, self.call = self.call, None
        self._cancel_timer()
        if call is None:
            return
        keep = self.parser.should_keep_alive()
        self._finish(call)
        if keep and not self.closed:
            self.reused = True
            self.client._released(self)
        else:
            self.transport.close()

    # ours
    def start(self, call: _Call) -> None:
        self.call = call
        self._reset()
        self.timer = self.client.loop.call_later(self.client.timeout, self._timed_out)
        self.transport.write(call.head)

    def _finish(self, call: _Call) -> None:
        if self.status != 200:
            self.client._fail(call, f"invalid response {self.status}")
            return
        body = b"".join(self.body)
        try:
            if self.encoding == b"gzip":
                body = gzip.decompress(body)
            elif self.encoding == b"deflate":
                body = zlib.decompress(body)
        except (OSError, zlib.error, EOFError) as exc:
            self.client._fail(call, f"bad {self.encoding.decode()} body ({exc})")
            return
        if not call.future.done():
            call.future.set_result(body)

    def _timed_out(self) -> None:
        self.timer = None
        call, self.call = self.call, None
        if call is not None:
            self.client._fail(call, f"timeout after {self.client.timeout:g}s awaiting the response")
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _TargetClient:
    """Calls ``http://<target>`` the way the Go example's ``http.DefaultClient`` does,
    over a pool of keep-alive connections (LIFO, so the warm ones stay warm)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: str, http_proxy: str | None,
                 no_proxy: str | None, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        url = "http://" + target
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"target {target!r}: no host")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"target {target!r}: invalid port") from None
        netloc = parts.netloc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.url_text = url  # as Go quotes it in errors: Get "http://world": ...
        self.proxy = proxy_for(parts.hostname, port, http_proxy, no_proxy)
        if self.proxy is not None:
            self.connect_to = (self.proxy.host, self.proxy.port)
            request_target = f"http://{netloc}{path}"
        else:
            self.connect_to = (parts.hostname, port)
            request_target = path
        head = [f"GET {request_target} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: {USER_AGENT}\r\n".encode("ascii")]
        if self.proxy is not None and self.proxy.authorization:
            head.append(b"Proxy-Authorization: " + self.proxy.authorization + b"\r\n")
        self.head_prefix = b"".join(head)
        # Go's transport asks for gzip (and then decodes it) unless told otherwise.
        self.head_suffix = b"Accept-Encoding: gzip\r\n\r\n"
        self.idle: list[_TargetConn] = []
        self.waiting: collections.deque[_Call] = collections.deque()
        self.open_conns = 0
        self.conns: set[_TargetConn] = set()
        self.closed = False

    def fetch(self, ctx_headers: list[tuple[bytes, bytes]]) -> asyncio.Future:
        """The target's answer body (a Future), or TargetCallError with the reason."""
        if ctx_headers:
            head = b"".join([self.head_prefix]
                            + [n + b": " + v + b"\r\n" for n, v in ctx_headers]
                            + [self.head_suffix])
        else:
            head = self.head_prefix + self.head_suffix
        fut = self.loop.create_future()
        self._dispatch(_Call(head, fut, False))
        return fut

    def _dispatch(self, call: _Call, fresh: bool = False) -> None:
        if self.closed:
            self._fail(call, "client closed")
            return
        while self.idle and not fresh:
            conn = self.idle.pop()
            if not conn.closed:
                conn.start(call)
                return
        if self.open_conns < _POOL_MAX_CONNS:
            self.open_conns += 1
            self.loop.create_task(self._open(call))
        else:
            self.waiting.append(call)

    async def _open(self, call: _Call) -> None:
        host, port = self.connect_to
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _TargetConn(self), host, port),
                self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.open_conns -= 1
            what = "proxyconnect tcp: " if self.proxy is not None else ""
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or "timeout")
            self._fail(call, f"{what}dial tcp {host}:{port}: {reason}")
            self._serve_waiting()
            return
        if self.closed:
            conn.transport.close()
            self._fail(call, "client closed")
            return
        self.conns.add(conn)
        conn.start(call)

    def _released(self, conn: _TargetConn) -> None:
        if self.waiting:
            conn.start(self.waiting.popleft())
        elif len(self.idle) < _POOL_MAX_IDLE and not self.closed:
            self.idle.append(conn)
        else:
            conn.transport.close()

    def _lost(self, conn: _TargetConn) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self.open_conns -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._serve_waiting()

    def _serve_waiting(self) -> None:
        if self.waiting and self.open_conns < _POOL_MAX_CONNS and not self.closed:
            self._dispatch(self.waiting.popleft(), fresh=True)

    def _fail(self, call: _Call, reason: str) -> None:
        if not call.future.done():
            call.future.set_exception(TargetCallError(f'Get "{self.url_text}": {reason}'
                                                      if not reason.startswith("invalid response") else reason))

    def close(self) -> None:
        self.closed = True
        while self.waiting:
            self._fail(self.waiting.popleft(), "client closed")
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


# --------------------------------------------------------------------------- server

class _Pending:
    """A reply slot on one connection: answers go out in request order (pipelining)."""

    __slots__ = ("data", "keep_alive")

    def __init__(self, data: bytes | None, keep_alive: bool) -> None:
        self.data = data
        self.keep_alive = keep_alive


class _App:
    """What every connection of one server shares: the text, the target client, settings."""

    def __init__(self, loop: asyncio.AbstractEventLoop, text: str, target: str | None,
                 pod_ip: str | None, http_proxy: str | None, no_proxy: str | None,
                 latency: float, failure_rate: float, json_output: bool,
                 idle_timeout: float, target_timeout: float) -> None:
        self.loop = loop
        self.text = text + (f" ({pod_ip})" if pod_ip else "")
        self.client = (_TargetClient(loop, target, http_proxy, no_proxy, target_timeout)
                       if target else None)
        self.latency = latency
        self.failure_rate = failure_rate
        self.json_output = json_output
        self.idle_timeout = idle_timeout
        self.date = _DateCache()
        self.conns: set[_ServerConn] = set()
        # world's answer never changes: render it once per Date second.
        self._static_body = self._final_body(self.text)
        self._static_second = -1
        self._static_reply = b""

    def _final_body(self, text: str) -> bytes:
        if self.json_output:
            return _go_json({"api_result": text})
        return (text + "!").encode("utf-8")

    def static_reply(self) -> bytes:
        """The common case, a kept-alive HTTP/1.1 GET answered by a target-less server."""
        date = self.date.get()
        if self.date.second != self._static_second:
            self._static_second = self.date.second
            self._static_reply = _render(200, self._static_body, date, True, False, False)
        return self._static_reply

    def handle(self, conn: "_ServerConn", method: bytes, url: bytes,
               ctx: list[tuple[bytes, bytes]], keep_alive: bool, http10: bool) -> None:
        head_only = method == b"HEAD"
        if url[:1] != b"/":  # absolute form (sent to us as if we were a proxy): use its path
            try:
                parsed = httptools.parse_url(url)
                url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
            except httptools.HttpParserInvalidURLError:
                pass
        path, _, query = url.partition(b"?")
        if path == b"/setLatency" or path == b"/setFailureRate":
            status, body = self._handle_setting(method, path, query)
            extra = _NOSNIFF if status != 200 else b""
            conn.reply(_render(status, body, self.date.get(), keep_alive, http10, head_only, extra),
                       keep_alive)
            return
        if self.latency > 0:
            slot = conn.reply_later(keep_alive)
            self.loop.call_later(self.latency, self._answer, conn, slot, ctx, keep_alive,
                                 http10, head_only)
            return
        if self.client is None and self.failure_rate <= 0 and keep_alive and not http10 \
                and not head_only:
            conn.reply(self.static_reply(), True)
            return
        self._answer(conn, None, ctx, keep_alive, http10, head_only)

    def _answer(self, conn: "_ServerConn", slot: _Pending | None, ctx, keep_alive: bool,
                http10: bool, head_only: bool) -> None:
        if self.failure_rate > 0 and random.random() < self.failure_rate:
            data = _render(500, _error_body(""), self.date.get(), keep_alive, http10, head_only, _NOSNIFF)
            conn.fulfil(slot, data) if slot else conn.reply(data, keep_alive)
            return
        if self.client is None:
            data = _render(200, self._static_body, self.date.get(), keep_alive, http10, head_only)
            conn.fulfil(slot, data) if slot else conn.reply(data, keep_alive)
            return
        if slot is None:
            slot = conn.reply_later(keep_alive)
        fut = self.client.fetch(ctx)

        def done(f: asyncio.Future) -> None:
            exc = f.exception()
            if exc is not None:
                data = _render(503, _error_body(str(exc)), self.date.get(), keep_alive, http10,
                               head_only, _NOSNIFF)
            else:
                text = self.text + " " + f.result().decode("utf-8", "replace")
                data = _render(200, self._final_body(text), self.date.get(), keep_alive, http10,
                               head_only)
            conn.fulfil(slot, data)

        fut.add_done_callback(done)

    def _handle_setting(self, method: bytes, path: bytes, query: bytes) -> tuple[int, bytes]:
        if method != b"POST":
            return 405, _error_body("POST required")
        params = parse_qs(query.decode("latin-1"))
        if path == b"/setLatency":
            value = (params.get("latency") or [""])[0]
            if not value:
                return 400, _error_body("missing required parameter: latency")
            try:
                self.latency = max(0.0, parse_go_duration(value))
            except ValueError:
                return 400, _error_body("latency is not a valid duration")
            print("set latency to", _format_go_duration(self.latency), flush=True)
            return 200, b"ok"
        value = (params.get("failureRate") or [""])[0]
        if not value:
            return 400, _error_body("missing required parameter: failureRate")
        try:
            rate = float(value)
        except ValueError:
            return 400, _error_body("failureRate is not a valid float")
        if not 0.0 <= rate <= 1.0:
            return 400, _error_body("failureRate must be between 0.0 and 1.0")
        self.failure_rate = rate
        print("set failure rate to", _format_go_float(rate), flush=True)
        return 200, b"ok"

    def sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than the idle timeout."""
        deadline = self.loop.time() - self.idle_timeout
        for conn in list(self.conns):
            if conn.idle_since is not None and conn.idle_since < deadline:
                conn.transport.close()

    def close(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        if self.client is not None:
            self.client.close()


class _ServerConn(asyncio.Protocol):
    """One client connection: httptools parses, ``_App.handle`` answers, replies keep order."""

    def __init__(self, app: _App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.ctx: list[tuple[bytes, bytes]] = []
        self.pending: collections.deque[_Pending] = collections.deque()
        self.closing = False
        self.last_request_seen = False  # a request without keep-alive arrived: read no more
        self.read_paused = False
        self.write_paused = False
        self.idle_since: float | None = None  # loop time the connection went idle; None = busy

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.app.conns.add(self)
        self.idle_since = self.app.loop.time()

    def connection_lost(self, exc) -> None:
        self.app.conns.discard(self)
        self.pending.clear()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        if self.closing or self.last_request_seen:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad_request()
        except httptools.HttpParserError:
            # llhttp refuses bytes after a request that ends the connection; those are
            # dropped (the answers before them still go out), anything else is a 400.
            if not self.last_request_seen:
                self._bad_request()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    # httptools callbacks (on_header only where there is a target to pass l5d-ctx to)
    def on_message_begin(self) -> None:
        self.url = b""
        self.ctx = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        if self.closing:
            return
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        if not keep_alive:
            self.last_request_seen = True
        self.app.handle(self, parser.get_method(), self.url, self.ctx, keep_alive,
                        parser.get_http_version() == "1.0")

    # replies
    def reply(self, data: bytes, keep_alive: bool) -> None:
        if self.pending:
            self.pending.append(_Pending(data, keep_alive))
            return
        self._send(data, keep_alive)

    def reply_later(self, keep_alive: bool) -> _Pending:
        slot = _Pending(None, keep_alive)
        self.pending.append(slot)
        self._update_reading()
        return slot

    def fulfil(self, slot: _Pending, data: bytes) -> None:
        slot.data = data
        pending = self.pending
        while pending and pending[0].data is not None:
            head = pending.popleft()
            self._send(head.data, head.keep_alive)
        self._update_reading()

    def _send(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if not keep_alive:
            self.closing = True
            self.pending.clear()
            transport.close()
        elif not self.pending:
            self.idle_since = self.app.loop.time()

    def _update_reading(self) -> None:
        want_pause = self.write_paused or len(self.pending) >= _PIPELINE_HIGH
        if want_pause and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif self.read_paused and not self.write_paused and len(self.pending) <= _PIPELINE_LOW:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def _bad_request(self) -> None:
        self.closing = True
        self.pending.clear()
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 b"Connection: close\r\n\r\n400 Bad Request")
            self.transport.close()


class _CtxServerConn(_ServerConn):
    """A connection of a server with a target: also collects the ``l5d-ctx*`` headers."""

    def on_header(self, name: bytes, value: bytes) -> None:
        # Go's example matches the prefix "l5d-ctx" case-insensitively and keeps the first
        # value of each header (Header.Get).
        if name[:7].lower() == b"l5d-ctx":
            low = name.lower()
            if all(n.lower() != low for n, _ in self.ctx):
                self.ctx.append((name, value))


class HelloWorldServer(asyncio.AbstractServer):
    """The listening server plus what it owns: closing it also closes its client
    connections, its connections to the proxy and the idle sweeper."""

    def __init__(self, server: asyncio.base_events.Server, app: _App,
                 sweeper: asyncio.TimerHandle | None) -> None:
        self._server = server
        self._app = app
        self._sweeper = sweeper

    @property
    def sockets(self):
        return self._server.sockets

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._server.close()
        self._app.close()

    def get_loop(self):
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def serve(addr: str, text: str, target: str | None, pod_ip: str | None,
                http_proxy: str | None, *, no_proxy: str | None = None, latency: float = 0.0,
                failure_rate: float = 0.0, json_output: bool = False,
                idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                target_timeout: float = DEFAULT_TARGET_TIMEOUT) -> HelloWorldServer:
    """Start a hello/world server on the running loop (in-process use: tests, the demo).

    ``http_proxy``/``no_proxy`` are taken as given (the environment is not read here).
    Raises ValueError for a bad address/target/proxy and OSError when the address is taken.
    """
    loop = asyncio.get_running_loop()
    host, port = parse_addr(addr)
    if not 0.0 <= failure_rate <= 1.0:
        raise ValueError(f"failure rate {failure_rate} is not between 0.0 and 1.0")
    app = _App(loop, text, target or None, pod_ip or None, http_proxy or None, no_proxy,
               max(0.0, latency), failure_rate, json_output, idle_timeout, target_timeout)
    conn_class = _CtxServerConn if app.client is not None else _ServerConn
    server = await loop.create_server(lambda: conn_class(app), host, port, backlog=1024)
    result = HelloWorldServer(server, app, None)
    if idle_timeout > 0:
        # One timer per server, not one per connection or request.
        period = min(1.0, idle_timeout / 2)

        def tick() -> None:
            app.sweep_idle()
            result._sweeper = loop.call_later(period, tick)

        result._sweeper = loop.call_later(period, tick)
    return result


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser, preset: str | None = None) -> None:
    """Flags of ``fastmesh helloworld``; ``preset='hello'|'world'`` sets that service's
    defaults (``fastmesh hello``, ``fastmesh world``). Go's one-dash forms work too."""
    defaults = {"addr": DEFAULT_ADDR, "text": DEFAULT_TEXT, "target": None}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        defaults.update(PRESETS[preset])
    parser.add_argument("-addr", "--addr", default=defaults["addr"],
                        help=f"address to serve on (default {defaults['addr']!r})")
    parser.add_argument("-text", "--text", default=defaults["text"],
                        help=f"text to serve (default {defaults['text']!r}; env TARGET_WORLD overrides it)")
    parser.add_argument("-target", "--target", default=defaults["target"],
                        help="target service to call before returning, e.g. world or localhost:7778"
                             + (f" (default {defaults['target']!r})" if defaults["target"] else ""))
    parser.add_argument("-latency", "--latency", type=parse_go_duration, default=0.0,
                        metavar="DURATION", help="time to sleep before processing a request (e.g. 50ms)")
    parser.add_argument("-failure-rate", "--failure-rate", type=float, default=0.0,
                        metavar="RATE", help="rate of error responses to return (0.0 to 1.0)")
    parser.add_argument("-json", "--json", type=_go_bool, nargs="?", const=True, default=False,
                        help="return JSON instead of plain text")
    parser.add_argument("-protocol", "--protocol", default="http",
                        help="API protocol: only http is supported")
    parser.add_argument("-idle-timeout", "--idle-timeout", type=parse_go_duration,
                        default=DEFAULT_IDLE_TIMEOUT, metavar="DURATION",
                        help="close keep-alive connections idle this long (default 5s; 0 = never)")
    parser.add_argument("-target-timeout", "--target-timeout", type=parse_go_duration,
                        default=DEFAULT_TARGET_TIMEOUT, metavar="DURATION",
                        help="give up on the target call after this long (default 30s)")


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


async def _serve_until_signalled(args: argparse.Namespace) -> int:
    text = os.environ.get("TARGET_WORLD") or args.text
    try:
        server = await serve(args.addr, text, args.target, os.environ.get("POD_IP"),
                             _env("HTTP_PROXY", "http_proxy"),
                             no_proxy=_env("NO_PROXY", "no_proxy"), latency=args.latency,
                             failure_rate=args.failure_rate, json_output=args.json,
                             idle_timeout=args.idle_timeout, target_timeout=args.target_timeout)
    except (OSError, ValueError) as exc:
        print(f"helloworld: {exc}", file=sys.stderr, flush=True)
        return 1
    host, port = parse_addr(args.addr)
    shown = args.addr
    if port == 0:  # say which port was picked (Go would print ":0")
        shown = f"[{host}]:{server.port}" if host and ":" in host else f"{host or ''}:{server.port}"
    print("starting HTTP server on", shown, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM/SIGINT; 0 then, 1 if it cannot start."""
    if args.protocol != "http":
        print(f"helloworld: unsupported protocol: {args.protocol} (only http is supported)",
              file=sys.stderr)
        return 1
    if not 0.0 <= args.failure_rate <= 1.0:
        print(f"helloworld: -failure-rate {args.failure_rate} is not between 0.0 and 1.0", file=sys.stderr)
        return 1
    import uvloop
    return uvloop.run(_serve_until_signalled(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastmesh helloworld",
                                     description="The hello/world sample service of the linkerd examples.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
