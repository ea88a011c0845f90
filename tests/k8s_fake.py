"""A fake kube-apiserver (as seen through ``kubectl proxy``) for the io.l5d.k8s tests.

The only fake in fastmesh's tests, allowed because a real API server cannot run here. It
is a real HTTP/1.1 server on loopback (asyncio streams) that speaks the API's wire format
and follows the replay rules of the fixtures' README (tests/data/k8s/README.md):

* GET of one object or a LIST: ``200``, ``Content-Type: application/json``, the JSON body;
  a missing object: ``404`` with an apimachinery ``Status`` (NotFound).
* WATCH (``/api/v1/watch/...`` or ``?watch=true|1``): ``200``, chunked; every event is one
  compact JSON document followed by ``\\n``, flushed on its own — unless a test asks for a
  document split across two chunks, or several documents in one chunk.
* ``resourceVersion`` unset or ``"0"``: the stream starts with synthetic ``ADDED`` events for
  every existing object; a specific one: the events after it, or — when it is older than
  the retained history (``compact()``) — one ``ERROR`` event with a 410 ``Expired`` Status,
  then the end of the stream. ``timeoutSeconds=N`` ends the stream cleanly after N s.
* ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``) filters LISTs and WATCHes; a GET of
  a named object ignores it, as a real server does. ``fieldSelector=metadata.name=x`` too.
* BOOKMARK events only to watches that asked ``allowWatchBookmarks=true``.
* every read of a ``v1 Endpoints`` carries the ``Warning: 299 - "v1 Endpoints is
  deprecated..."`` header (v1.33+).
* scripted failures (``fail()``): the next N matching requests get a status and a
  Status body (403 Forbidden, 410 Expired, 500...).

State lives in memory; the test drives it (``put``, ``delete``, ``replay`` a fixture event,
``bookmark``, ``compact``, ``end_watches``). Every call must run on the fake's event loop.
Every request is recorded in ``requests`` (method, path, query) for assertions.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

DATA = Path(__file__).parent / "data" / "k8s"
ENDPOINTS_WARNING = '299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"'
HISTORY_LIMIT = 1000
KINDS = {"endpoints": "Endpoints", "services": "Service", "pods": "Pod"}


def fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason}
    if details:
        body["details"] = details
    body["code"] = code
    return body


def not_found(resource: str, name: str) -> dict:
    """The shape of status-404-endpoints-notfound.json for any object."""
    doc = fixture("status-404-endpoints-notfound.json")
    doc["message"] = f'{resource} "{name}" not found'
    doc["details"] = {"name": name, "kind": resource}
    return doc


# --- selectors --------------------------------------------------------------------------------


def label_selector(text: str | None) -> Callable[[dict], bool]:
    if not text:
        return lambda obj: True
    terms = []
    for term in text.split(","):
        term = term.strip()
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "==" in term:
            k, v = term.split("==", 1)
            terms.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif "=" in term:
            k, v = term.split("=", 1)
            terms.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif term.startswith("!"):
            terms.append(lambda labels, k=term[1:]: k not in labels)
        else:
            terms.append(lambda labels, k=term: k in labels)

    def match(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(t(labels) for t in terms)

    return match


def field_name(text: str | None) -> str | None:
    if not text:
        return None
    for term in text.split(","):
        key, _, value = term.partition("=")
        if key.strip() == "metadata.name":
            return value.lstrip("=").strip()
    return None


# --- recorded traffic and scripts ------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    at: float

    @property
    def is_watch(self) -> bool:
        return self.path.startswith("/api/v1/watch/") or self.query.get("watch") in ("true", "1")


@dataclass
class Scripted:
    """Answer the next ``times`` requests for which ``match(request)`` holds."""

    match: Callable[[Request], bool]
    status: int
    body: dict
    times: int = 1
    watch_error_event: bool = False  # 200 + one ERROR event instead of an HTTP error


@dataclass(eq=False)
class _Watcher:
    resource: str
    namespace: str
    name: str | None
    selects: Callable[[dict], bool]
    bookmarks: bool
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


# --- the server ---------------------------------------------------------------------------------------


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.rv = 1000
        self.history: list[tuple[int, str, str, str, dict, dict | None]] = []
        self.history_floor = 0  # a watch from an RV below this is answered 410 Expired
        self.requests: list[Request] = []
        self.scripted: list[Scripted] = []
        self.watchers: set[_Watcher] = set()
        self.split_next = 0  # the next N event documents are each cut in two chunks
        self.coalesce_next = 0  # the next N events are written together in one chunk
        self.watch_chunks: list[bytes] = []  # every watch chunk sent (for assertions)
        self.server: asyncio.AbstractServer | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._conns: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock=None) -> "FakeKubeApi":
        self._changed = asyncio.Event()
        if sock is not None:
            self.server = await asyncio.start_server(self._serve, sock=sock)
        else:
            self.server = await asyncio.start_server(self._serve, host, port)
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.end_watches()
        for w in list(self._conns):
            w.close()
        if self.server is not None:
            await asyncio.wait_for(self.server.wait_closed(), 5)
        self.server = None

    # --- state control (on the fake's loop) ------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def load(self, resource: str, doc: dict) -> None:
        """Store one object or every item of a List (no events: it was there already)."""
        items = doc["items"] if doc.get("kind", "").endswith("List") else [doc]
        for item in items:
            obj = copy.deepcopy(item)
            obj.setdefault("kind", KINDS[resource])
            obj.setdefault("apiVersion", "v1")
            md = obj["metadata"]
            self.objects[(resource, md.get("namespace", "default"), md["name"])] = obj
            rv = int(md.get("resourceVersion") or 0)
            self.rv = max(self.rv, rv)
        if doc.get("kind", "").endswith("List"):
            self.rv = max(self.rv, int(doc["metadata"].get("resourceVersion") or 0))

    def put(self, resource: str, obj: dict) -> str:
        """Create or replace an object as the API server would (new RV, ADDED/MODIFIED)."""
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", KINDS[resource])
        obj.setdefault("apiVersion", "v1")
        md = obj.setdefault("metadata", {})
        md.setdefault("namespace", "default")
        key = (resource, md["namespace"], md["name"])
        old = self.objects.get(key)
        if old is None:
            md.setdefault("uid", f"00000000-0000-4000-8000-{self.rv + 1:012d}")
            md.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        md["resourceVersion"] = self._next_rv()
        self.objects[key] = obj
        self._broadcast("MODIFIED" if old is not None else "ADDED", resource, md["namespace"], obj, old)
        return md["resourceVersion"]

    def delete(self, resource: str, namespace: str, name: str) -> None:
        old = self.objects.pop((resource, namespace, name))
        obj = copy.deepcopy(old)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._broadcast("DELETED", resource, namespace, obj, old)

    def replay(self, resource: str, event: dict) -> None:
        """Apply a fixture watch event (its object keeps its own resourceVersion)."""
        kind, obj = event["type"], copy.deepcopy(event["object"])
        md = obj.get("metadata") or {}
        rv = int(md.get("resourceVersion") or 0)
        self.rv = max(self.rv, rv)
        if kind == "BOOKMARK":
            self._bookmark(resource, obj)
            return
        if kind == "ERROR":
            self._send_all(resource, {"type": "ERROR", "object": obj})
            return
        key = (resource, md.get("namespace", "default"), md["name"])
        old = self.objects.get(key)
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self._broadcast(kind, resource, key[1], obj, old)

    def bookmark(self, resource: str = "endpoints") -> str:
        rv = str(self.rv)
        self._bookmark(resource, {"kind": KINDS[resource], "apiVersion": "v1",
                                  "metadata": {"resourceVersion": rv, "creationTimestamp": None}})
        return rv

    def compact(self) -> None:
        """Forget the event history: a watch from any older RV now gets 410 Expired."""
        self.history.clear()
        self.history_floor = self.rv

    def end_watches(self) -> None:
        """End every open watch stream cleanly, as the server does after timeoutSeconds."""
        for w in list(self.watchers):
            w.queue.put_nowait(None)

    def fail(self, match: Callable[[Request], bool], status: int, body: dict | None = None,
             times: int = 1, *, as_error_event: bool = False) -> None:
        if body is None:
            reasons = {403: "Forbidden", 404: "NotFound", 410: "Expired", 500: "InternalError",
                       503: "ServiceUnavailable"}
            body = status_body(status, reasons.get(status, "Unknown"), f"scripted {status}")
        self.scripted.append(Scripted(match, status, body, times, as_error_event))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until ``predicate()`` holds; re-checked on every request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake API: condition not met within {timeout}s; "
                                   f"requests: {[(r.path, r.query) for r in self.requests][-10:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass

    def watch_count(self, path_part: str = "") -> int:
        return sum(1 for r in self.requests if r.is_watch and path_part in r.path)

    def get_count(self, path_part: str = "") -> int:
        return sum(1 for r in self.requests if not r.is_watch and path_part in r.path)

    # --- broadcasting ----------------------------------------------------------------------------------

    def _broadcast(self, kind: str, resource: str, namespace: str, obj: dict, old: dict | None) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), kind, resource, namespace, obj, old))
        del self.history[:-HISTORY_LIMIT]
        for w in list(self.watchers):
            event = _event_for(w, kind, resource, namespace, obj, old)
            if event is not None:
                w.queue.put_nowait(event)

    def _bookmark(self, resource: str, obj: dict) -> None:
        for w in list(self.watchers):
            if w.resource == resource and w.bookmarks:
                w.queue.put_nowait({"type": "BOOKMARK", "object": obj})

    def _send_all(self, resource: str, event: dict) -> None:
        for w in list(self.watchers):
            if w.resource == resource:
                w.queue.put_nowait(event)

    # --- HTTP ------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                        ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                url = urlsplit(target)
                req = Request(method, url.path, dict(parse_qsl(url.query, keep_blank_values=True)),
                              time.monotonic())
                self.requests.append(req)
                self._changed.set()
                keep = await self._answer(req, reader, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        except RuntimeError:  # the client went away mid-write (uvloop: "handler is closed")
            return
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _answer(self, req: Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        if req.method != "GET":
            await self._json(writer, 405, status_body(405, "MethodNotAllowed", "only GET here"))
            return False
        for script in self.scripted:
            if script.times > 0 and script.match(req):
                script.times -= 1
                if script.watch_error_event:
                    await self._stream_start(writer, req)
                    await self._write_events(writer, [{"type": "ERROR", "object": script.body}])
                    await self._stream_end(writer)
                    return False
                await self._json(writer, script.status, script.body)
                return True
        route = _route(req)
        if route is None:
            await self._json(writer, 404, status_body(404, "NotFound",
                                                      "the server could not find the requested resource"))
            return True
        resource, namespace, name, watch = route
        if resource not in KINDS:
            await self._json(writer, 404, status_body(404, "NotFound",
                                                      "the server could not find the requested resource"))
            return True
        name = name or field_name(req.query.get("fieldSelector"))
        warn = resource == "endpoints"
        if watch:
            await self._watch(reader, writer, req, resource, namespace, name)
            return False
        if route[2] is not None:  # GET of one object: labelSelector is ignored
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                await self._json(writer, 404, not_found(resource, name), warn)
            else:
                await self._json(writer, 200, obj, warn)
            return True
        selects = label_selector(req.query.get("labelSelector"))
        items = []
        for (res, ns, n), obj in sorted(self.objects.items()):
            if res == resource and ns == namespace and (name is None or n == name) and selects(obj):
                item = copy.deepcopy(obj)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        await self._json(writer, 200, {"kind": KINDS[resource] + "List", "apiVersion": "v1",
                                       "metadata": {"resourceVersion": str(self.rv)},
                                       "items": items}, warn)
        return True

    async def _json(self, writer: asyncio.StreamWriter, status: int, doc: dict, warn: bool = False) -> None:
        body = compact(doc)
        reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                  410: "Gone", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "X")
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
                "Cache-Control: no-cache, private", f"Content-Length: {len(body)}"]
        if warn:
            head.append(f"Warning: {ENDPOINTS_WARNING}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _stream_start(self, writer: asyncio.StreamWriter, req: Request) -> None:
        head = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Cache-Control: no-cache, private",
                "Transfer-Encoding: chunked"]
        if "endpoints" in req.path:
            head.append(f"Warning: {ENDPOINTS_WARNING}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()

    async def _stream_end(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        self.watch_chunks.append(data)
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()

    async def _write_events(self, writer: asyncio.StreamWriter, events: list[dict]) -> None:
        pending = [compact(e) + b"\n" for e in events]
        while pending:
            if self.coalesce_next > 1 and len(pending) >= 2:
                n = min(self.coalesce_next, len(pending))
                self.coalesce_next = 0
                await self._chunk(writer, b"".join(pending[:n]))
                del pending[:n]
                continue
            doc = pending.pop(0)
            if self.split_next > 0:
                self.split_next -= 1
                cut = len(doc) // 2
                await self._chunk(writer, doc[:cut])
                await asyncio.sleep(0.03)  # the halves reach the client in separate reads
                await self._chunk(writer, doc[cut:])
            else:
                await self._chunk(writer, doc)

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     req: Request, resource: str, namespace: str, name: str | None) -> None:
        q = req.query
        selects = label_selector(q.get("labelSelector"))
        watcher = _Watcher(resource, namespace, name, selects, q.get("allowWatchBookmarks") == "true")
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else 1800.0
        rv_text = q.get("resourceVersion") or ""
        await self._stream_start(writer, req)
        self.watchers.add(watcher)  # from here on nothing is missed
        try:
            if rv_text not in ("", "0"):
                rv = int(rv_text)
                if rv < self.history_floor:
                    await self._write_events(writer, [{"type": "ERROR", "object": status_body(
                        410, "Expired", f"too old resource version: {rv} ({self.rv})")}])
                    await self._stream_end(writer)
                    return
                backlog = []
                for ev_rv, kind, res, ns, obj, old in self.history:
                    if ev_rv > rv:
                        event = _event_for(watcher, kind, res, ns, obj, old)
                        if event is not None:
                            backlog.append(event)
            else:
                backlog = [{"type": "ADDED", "object": obj}
                           for (res, ns, n), obj in sorted(self.objects.items())
                           if res == resource and ns == namespace and (name is None or n == name)
                           and selects(obj)]
            if backlog:
                await self._write_events(writer, backlog)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            # the client closing its end stops the stream (a real server notices too)
            gone = loop.create_task(reader.read(1))
            try:
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    get = loop.create_task(watcher.queue.get())
                    done, _ = await asyncio.wait({get, gone}, timeout=remaining,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        if gone in done:
                            return
                        break
                    event = get.result()
                    if event is None:
                        break
                    batch = [event]
                    while self.coalesce_next > len(batch) and not watcher.queue.empty():
                        nxt = watcher.queue.get_nowait()
                        if nxt is None:
                            watcher.queue.put_nowait(None)
                            break
                        batch.append(nxt)
                    await self._write_events(writer, batch)
                    if event["type"] == "ERROR":
                        break  # the server ends a watch after an ERROR event
            finally:
                gone.cancel()
            await self._stream_end(writer)
        finally:
            self.watchers.discard(watcher)


def _route(req: Request) -> tuple[str, str, str | None, bool] | None:
    """(resource, namespace, name or None, is watch) of an API path."""
    parts = [p for p in req.path.split("/") if p]
    watch = req.query.get("watch") in ("true", "1")
    if parts[:2] != ["api", "v1"]:
        return None
    rest = parts[2:]
    if rest[:1] == ["watch"]:
        watch, rest = True, rest[1:]
    if len(rest) in (3, 4) and rest[0] == "namespaces":
        return rest[2], rest[1], rest[3] if len(rest) == 4 else None, watch
    return None


def _event_for(w: _Watcher, kind: str, resource: str, namespace: str, obj: dict,
               old: dict | None) -> dict | None:
    """The event a watcher sees, with a real server's label-selector transitions."""
    if w.resource != resource or w.namespace != namespace:
        return None
    if w.name is not None and obj["metadata"]["name"] != w.name:
        return None
    now = w.selects(obj)
    before = old is not None and w.selects(old)
    if kind == "DELETED":
        return {"type": "DELETED", "object": obj} if before or now else None
    if now and not before:
        return {"type": "ADDED", "object": obj}
    if before and not now:
        return {"type": "DELETED", "object": obj}
    if now:
        return {"type": kind, "object": obj}
    return None
