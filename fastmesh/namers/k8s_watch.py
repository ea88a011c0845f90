"""One Kubernetes object kept current: a GET, then a streaming watch (spec §5.1).

Role in the data path: none per request. The ``io.l5d.k8s`` namer owns one
:class:`ObjectWatch` per (namespace, resource, name, labelSelector) — the Endpoints of a
Service, or the Service itself for numbered ports — shared by every name that needs it.
The watch holds the object's latest state in memory and calls ``on_change()`` when it
changes; lookups read that state and never wait for I/O.

The loop, as linkerd's client runs it against the API server:

* ``GET /api/v1/namespaces/<ns>/<resource>/<name>[?labelSelector=...]``. 200 → the object;
  404 → it does not exist (yet). Until the first GET completes the state is *unknown*
  (the namer answers pending). Any other status, or no answer at all, is retried with
  jittered exponential backoff between 1 ms and 5 s, forever, one attempt at a time.
* ``GET /api/v1/watch/namespaces/<ns>/<resource>/<name>?resourceVersion=<last seen>``
  (chunked, one JSON event per line), re-opened from the last resourceVersion whenever
  the stream ends. ADDED/MODIFIED replace the object, DELETED removes it, BOOKMARK only
  advances the resourceVersion; an event older than the newest resourceVersion seen is
  ignored. An ``ERROR`` event (410 Expired/Gone, or any other) or an HTTP 410 → GET again,
  then watch again. Other non-2xx answers are retried with backoff.
* After a 404 the watch starts without a resourceVersion, so the server first replays
  the object as ADDED if it was created in between. So does the first watch after an
  expiry (ERROR event or 410): a GET returns the object's own resourceVersion, the one of
  its last change, which may be older than the server's watch window — watching from it
  would expire again at once; without one the server starts from the current state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .k8s_api import STOP, ApiError, K8sApiClient

log = logging.getLogger("fastmesh.namers.k8s")

BACKOFF_MIN_S = 0.001
BACKOFF_MAX_S = 5.0
WATCH_TIMEOUT_S = 300  # asked of the server (timeoutSeconds); it then ends the stream cleanly
WATCH_STALL_GRACE_S = 30.0  # beyond timeoutSeconds: the connection is presumed dead
SHORT_WATCH_S = 1.0  # a watch that ends this fast without events is retried with backoff


class Backoff:
    """Jittered exponential backoff: the n-th delay is uniform in [min, min(max, min·2ⁿ)]."""

    def __init__(self, min_s: float = BACKOFF_MIN_S, max_s: float = BACKOFF_MAX_S,
                 rng: Callable[[], float] = random.random):
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        cap = min(self.max_s, self.min_s * (2 ** min(self._attempt, 40)))
        self._attempt += 1
        return self.min_s + self._rng() * (cap - self.min_s)

    def reset(self) -> None:
        self._attempt = 0


def resource_version_older(candidate: str | None, newest: str | None) -> bool:
    """True when ``candidate`` is older than ``newest`` (both numeric; else never older).

    resourceVersions are opaque to clients in general, but every server in the field
    (etcd revisions) issues increasing integers, and linkerd compares them as such."""
    if not candidate or not newest:
        return False
    try:
        return int(candidate) < int(newest)
    except ValueError:
        return False


def labels_match(obj: dict, selector: tuple[str, str] | None) -> bool:
    if selector is None:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(selector[0]) == selector[1]


@dataclass
class WatchStats:
    """What /namer_state shows about one watch (informational)."""

    gets: int = 0
    watches: int = 0
    events: int = 0
    relists: int = 0
    errors: int = 0
    last_error: str | None = None
    last_change: float | None = None  # time.time()


@dataclass
class ObjectWatch:
    """The live state of one object: ``known`` after the first GET; ``obj`` None = absent."""

    client: K8sApiClient
    namespace: str
    resource: str  # "endpoints" or "services"
    name: str
    label_selector: tuple[str, str] | None  # (label, value)
    on_change: Callable[["ObjectWatch"], None]
    watch_timeout_s: int = WATCH_TIMEOUT_S
    known: bool = False
    obj: dict | None = None
    resource_version: str | None = None
    stats: WatchStats = field(default_factory=WatchStats)
    _task: asyncio.Task | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)
    _backoff: Backoff = field(default_factory=Backoff, repr=False)
    _expired: bool = field(default=False, repr=False)  # next watch: no resourceVersion

    # --- paths ---------------------------------------------------------------------------------

    @property
    def get_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/{self.resource}/{self.name}"

    @property
    def watch_path(self) -> str:
        return f"/api/v1/watch/namespaces/{self.namespace}/{self.resource}/{self.name}"

    def _query(self) -> dict[str, str]:
        if self.label_selector is None:
            return {}
        return {"labelSelector": f"{self.label_selector[0]}={self.label_selector[1]}"}

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed or self.running:
            return
        self._task = loop.create_task(self._run(), name=f"k8s watch {self.get_path}")

    def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            try:
                if not await self._list():
                    await asyncio.sleep(self._backoff.next())
                    continue
                await self._watch_until_relist()
                if not self._closed:
                    self.stats.relists += 1
                    await asyncio.sleep(self._backoff.next())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the watch for good: log, start over
                log.exception("io.l5d.k8s: watch of %s failed; starting over", self.get_path)
                self._error(f"{self.get_path}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(self._backoff.next())

    async def _list(self) -> bool:
        """One GET; True when it settled the state (200 or 404). The backoff is reset only
        by a watch that works (an event, or a full-length stream), so a server that fails
        every watch right after a good GET is not asked again in a tight loop."""
        self.stats.gets += 1
        try:
            resp = await self.client.get(self.get_path, self._query())
        except ApiError as exc:
            self._error(f"GET {self.get_path}: {exc}")
            return False
        if resp.status == 200:
            try:
                obj = resp.json()
            except ValueError as exc:
                self._error(f"GET {self.get_path}: malformed JSON: {exc}")
                return False
            if not isinstance(obj, dict):
                self._error(f"GET {self.get_path}: not a JSON object")
                return False
            self.resource_version = _rv_of(obj)
            self._set(obj if self._selects(obj) else None, force=not self.known)
            return True
        if resp.status == 404:
            self.resource_version = None
            self._set(None, force=not self.known)
            return True
        self._error(f"GET {self.get_path}: HTTP {resp.status}{_status_message(resp.body)}")
        return False

    async def _watch_until_relist(self) -> None:
        """Watch (re-opening the stream as needed) until a GET is needed again."""
        while not self._closed:
            query = self._query()
            query["allowWatchBookmarks"] = "true"
            query["timeoutSeconds"] = str(self.watch_timeout_s)
            if self.resource_version and not self._expired:
                query["resourceVersion"] = self.resource_version
            self._expired = False
            self.stats.watches += 1
            relist = False

            def on_event(doc: dict) -> Any:
                nonlocal relist
                if self._event(doc):
                    relist = True
                    return STOP
                return None

            started = time.monotonic()
            try:
                end = await self.client.watch(self.watch_path, query, on_event,
                                              timeout_s=self.watch_timeout_s + WATCH_STALL_GRACE_S)
            except ApiError as exc:
                self._error(f"watch {self.watch_path}: {exc}")
                await asyncio.sleep(self._backoff.next())
                continue
            if relist:
                self._expired = True
                return
            if end.status == 410:
                self._error(f"watch {self.watch_path}: HTTP 410{_status_message(end.body)}")
                self._expired = True
                return
            if not 200 <= end.status < 300:
                self._error(f"watch {self.watch_path}: HTTP {end.status}{_status_message(end.body)}")
                await asyncio.sleep(self._backoff.next())
                continue
            # A clean end (the server's timeoutSeconds): watch again from where we are.
            if end.events == 0 and time.monotonic() - started < SHORT_WATCH_S:
                await asyncio.sleep(self._backoff.next())
            else:
                self._backoff.reset()

    def _event(self, doc: dict) -> bool:
        """Apply one watch event; True when the watch must end and the object be re-read."""
        kind = doc.get("type")
        obj = doc.get("object")
        if not isinstance(obj, dict):
            obj = {}
        self.stats.events += 1
        if kind == "ERROR":
            code = obj.get("code")
            self._error(f"watch {self.watch_path}: ERROR event"
                        + (f" {code}" if code is not None else "")
                        + (f": {obj.get('message')}" if obj.get("message") else ""))
            return True
        rv = _rv_of(obj)
        if kind == "BOOKMARK":
            if rv and not resource_version_older(rv, self.resource_version):
                self.resource_version = rv
            return False
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return False  # an event type this client does not know: skip it
        if resource_version_older(rv, self.resource_version):
            return False  # stale (replayed from before our state)
        name = (obj.get("metadata") or {}).get("name")
        if name is not None and name != self.name:
            return False
        if rv:
            self.resource_version = rv
        self._backoff.reset()
        if kind == "DELETED":
            self._set(None)
        else:
            self._set(obj if self._selects(obj) else None)
        return False

    # --- state ---------------------------------------------------------------------------------

    def _selects(self, obj: dict) -> bool:
        # A GET of a named object ignores labelSelector on a real server: check it here.
        return labels_match(obj, self.label_selector)

    def _set(self, obj: dict | None, *, force: bool = False) -> None:
        changed = force or not self.known or _content(obj) != _content(self.obj)
        self.known = True
        self.obj = obj
        if changed:
            self.stats.last_change = time.time()
            self.on_change(self)

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.warning("io.l5d.k8s: %s", message)
        self.stats.last_error = message

    def state(self) -> dict:
        s = self.stats
        return {
            "path": self.get_path + (f"?labelSelector={self.label_selector[0]}={self.label_selector[1]}"
                                     if self.label_selector else ""),
            "known": self.known,
            "exists": self.obj is not None,
            "resourceVersion": self.resource_version,
            "running": self.running,
            "gets": s.gets, "watches": s.watches, "events": s.events, "relists": s.relists,
            "errors": s.errors, "lastError": s.last_error,
        }


def _rv_of(obj: dict) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv not in (None, "") else None


def _content(obj: dict | None) -> Any:
    """What matters of an object for the namer (not its resourceVersion or timestamps)."""
    if obj is None:
        return None
    return (obj.get("subsets"), obj.get("spec"), "status" in obj, "metadata" in obj,
            (obj.get("metadata") or {}).get("labels"))


def _status_message(body: bytes) -> str:
    """``: <message>`` from a Status body, if there is one."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    if isinstance(status, dict) and status.get("message"):
        return f": {status['message']}"
    return ""
