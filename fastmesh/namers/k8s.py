"""``io.l5d.k8s``: service discovery from the Kubernetes Endpoints API (spec §2.2, §5.1).

Role in the data path: on a route-cache miss the interpreter asks this namer for
``/#/io.l5d.k8s/<namespace>/<port>/<service>[/<labelValue>]/<residual...>``; it answers
from the in-memory state of its watches (:mod:`.k8s_watch`), never waiting for I/O:
pending until the first GET of the object completed, then ``Neg`` or a bound name
whose AddrVar holds the Service's ready endpoints.

Lookup rules (linkerd 1.7.5's EndpointsNamer):

* the first 3 segments (4 with ``labelSelector``) are lowercased and form the id
  ``/#/<prefix>/<ns>/<port>/<svc>[/<labelValue>]``; the rest is the residual. Fewer
  segments, or a missing label value, is ``Neg``;
* the Endpoints' port map is the union over subsets of ``ports[]`` that have a name and
  are TCP (no protocol = TCP); its endpoints are the union over subsets of the *ready*
  ``addresses[]`` (``notReadyAddresses`` never count), each with its ``nodeName``;
* a **named** port in the map → every endpoint × that port (metadata ``nodeName``); not
  in the map → ``Neg``. So a missing object, ``subsets: []``/``null`` or an unknown port
  name is ``Neg``, while pods that exist but are all unready give a bound name with no
  addresses (no fallback: 502 "no hosts");
* a **numbered** port also reads the Service: ``spec.ports[]`` maps port → targetPort
  (missing targetPort = the port), and only when the Service has ``metadata``, ``spec``
  and ``status``. Not in the mapping → ``Neg``; a numeric targetPort → every endpoint ×
  that number; a named targetPort → the named-port rule;
* with ``labelSelector: <label>`` the watch asks for ``<label>=<labelValue>`` and an
  object whose label differs counts as absent.

Existence is stabilised: each name has one AddrVar for its whole life. An address-only
change updates it in place (clients and route caches stay); a change between pending,
``Neg`` and bound tells the listeners, so the router re-binds. One watch per
(namespace, service, labelSelector) is shared by every name that uses it; at most
``max_names`` names are kept, the least recently looked-up unobserved ones are dropped
(with their watches) beyond that.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from fastmesh.naming.addr import (
    Addr,
    Address,
    AddrBound,
    AddrNeg,
    AddrPending,
    AddrVar,
    BoundName,
    Closable,
    Meta,
    normalize_host,
)
from fastmesh.naming.namer import PENDING, Listeners
from fastmesh.naming.nametree import Leaf, NameTree, Neg
from fastmesh.naming.path import Path

from .k8s_api import K8sApiClient
from .k8s_watch import WATCH_TIMEOUT_S, ObjectWatch

DEFAULT_PREFIX = Path.utf8("io.l5d.k8s")
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8001
MAX_NAMES = 4096
NODE_NAME_META = "nodeName"

# Kubernetes object names: DNS-1123 subdomains. A segment that cannot be one names no
# object, so it is Neg without asking the API (a Host like `world:7778` lands here).
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_PORT_NUMBER = re.compile(r"[0-9]{1,9}")
# Label values (after linkerd's lowercasing): anything else matches no object.
_LABEL_VALUE = re.compile(r"([a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?)?")


class TooManyNamesError(RuntimeError):
    """Every kept name is in use and the cap is reached (a lookup then fails)."""


@dataclass(frozen=True)
class NameKey:
    namespace: str
    port: str
    service: str
    label_value: str | None


@dataclass
class _Name:
    """One name's stable state: its AddrVar and the shape it last had."""

    key: NameKey
    var: AddrVar = field(default_factory=lambda: AddrVar(AddrPending))
    shape: str = "pending"  # "pending" | "neg" | "bound"


def endpoints_view(obj: dict | None) -> tuple[dict[str, int], frozenset[tuple[str, str | None]]] | None:
    """(port name → number, {(ip, nodeName)}) of an Endpoints object; None when absent."""
    if obj is None:
        return None
    ports: dict[str, int] = {}
    endpoints: set[tuple[str, str | None]] = set()
    for subset in obj.get("subsets") or ():
        if not isinstance(subset, dict):
            continue
        for address in subset.get("addresses") or ():
            if isinstance(address, dict) and address.get("ip"):
                endpoints.add((normalize_host(str(address["ip"])), address.get("nodeName") or None))
        for port in subset.get("ports") or ():
            if not isinstance(port, dict) or not port.get("name"):
                continue
            protocol = str(port.get("protocol") or "TCP").upper()
            number = port.get("port")
            if protocol == "TCP" and isinstance(number, int) and not isinstance(number, bool):
                ports[str(port["name"])] = number
    return ports, frozenset(endpoints)


def service_port_map(obj: dict | None) -> dict[int, int | str] | None:
    """port → targetPort of a Service; None when absent, empty unless it has metadata,
    spec and status (linkerd's rule: a partial object maps nothing)."""
    if obj is None:
        return None
    if not all(key in obj for key in ("metadata", "spec", "status")):
        return {}
    mapping: dict[int, int | str] = {}
    for port in (obj.get("spec") or {}).get("ports") or ():
        if not isinstance(port, dict):
            continue
        number = port.get("port")
        if not isinstance(number, int) or isinstance(number, bool):
            continue
        if str(port.get("protocol") or "TCP").upper() != "TCP":
            continue  # an HTTP proxy can only mean the TCP port of a name/number pair
        target = port.get("targetPort", number)
        if isinstance(target, bool) or not isinstance(target, (int, str)) or target in ("", 0):
            target = number
        mapping[number] = target
    return mapping


def _valid(key: NameKey) -> bool:
    return bool(_OBJECT_NAME.fullmatch(key.namespace) and _OBJECT_NAME.fullmatch(key.service)
                and (key.label_value is None or _LABEL_VALUE.fullmatch(key.label_value)))


def _numbered(port: str) -> bool:
    return _PORT_NUMBER.fullmatch(port) is not None


def _addresses(endpoints: frozenset[tuple[str, str | None]], port: int) -> AddrBound:
    return AddrBound(frozenset(
        Address(ip, port, Meta({NODE_NAME_META: node}) if node else Meta())
        for ip, node in endpoints))


class K8sNamer:
    """The ``io.l5d.k8s`` namer; answers ``/#`` + ``prefix``."""

    kind = "io.l5d.k8s"

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 prefix: Path = DEFAULT_PREFIX, label_selector: str | None = None, *,
                 client: K8sApiClient | None = None, watch_timeout_s: int = WATCH_TIMEOUT_S,
                 max_names: int = MAX_NAMES):
        self.host = host
        self.port = port
        self.prefix = prefix
        self.label_selector = label_selector
        self.client = client or K8sApiClient(host, port)
        self.watch_timeout_s = watch_timeout_s
        self.max_names = max_names
        self._id_prefix = Path.utf8("#") + prefix
        self._segments = 3 + (1 if label_selector else 0)
        self._names: OrderedDict[NameKey, _Name] = OrderedDict()  # LRU by lookup
        self._pinned: set[NameKey] = set()  # names the daemonset transformer holds: kept
        # (ns, svc, label value) → the names reading that object
        self._by_object: dict[tuple[str, str, str | None], set[NameKey]] = {}
        # watches: ("endpoints"|"services", ns, svc, label value) → ObjectWatch
        self._watches: dict[tuple[str, str, str, str | None], ObjectWatch] = {}
        self._listeners = Listeners()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # --- namer protocol --------------------------------------------------------------------------

    def lookup(self, path: Path) -> NameTree:
        if len(path) < self._segments:
            return Neg
        try:
            labels = [label.decode("utf-8").lower() for label in path.labels[: self._segments]]
        except UnicodeDecodeError:
            return Neg
        key = NameKey(labels[0], labels[1], labels[2], labels[3] if self.label_selector else None)
        if not _valid(key):
            return Neg
        name = self._name(key)
        if name.shape == "pending":
            return PENDING
        if name.shape == "neg":
            return Neg
        ident = self._id_prefix + Path.utf8(*labels)
        return Leaf(BoundName(ident, name.var, path.drop(self._segments)))

    def add_listener(self, callback: Callable[[], None]) -> Closable:
        return self._listeners.add(callback)

    # --- for the daemonset transformer -------------------------------------------------------------

    def addr_var(self, path: Path) -> AddrVar:
        """The AddrVar of ``/<ns>/<port>/<svc>``, whatever its shape: AddrPending until the
        API answered, AddrNeg while the name is Neg, else the bound addresses."""
        labels = [label.decode("utf-8", "replace").lower() for label in path.labels]
        if len(labels) < self._segments:
            raise ValueError(f"{path.show}: expected /<namespace>/<port>/<service>")
        key = NameKey(labels[0], labels[1], labels[2], labels[3] if self.label_selector else None)
        if not _valid(key):
            raise ValueError(f"{path.show}: not a Kubernetes namespace/service name")
        return self._name(key, pinned=True).var

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the watches on ``loop`` (the running loop by default); new ones start as
        names are looked up."""
        self._loop = loop or asyncio.get_running_loop()
        self._closed = False
        for watch in self._watches.values():
            watch.start(self._loop)

    def close(self) -> None:
        self._closed = True
        for watch in self._watches.values():
            watch.close()

    # --- names and watches -------------------------------------------------------------------------

    def _name(self, key: NameKey, pinned: bool = False) -> _Name:
        name = self._names.get(key)
        if name is not None:
            self._names.move_to_end(key)
            if pinned:
                self._pinned.add(key)
            return name
        self._make_room()
        name = _Name(key)
        self._names[key] = name
        self._by_object.setdefault((key.namespace, key.service, key.label_value), set()).add(key)
        if pinned:
            self._pinned.add(key)
        self._watch("endpoints", key)
        if _numbered(key.port):
            self._watch("services", key)
        self._recompute(name)
        return name

    def _make_room(self) -> None:
        if len(self._names) < self.max_names:
            return
        for key, name in list(self._names.items()):
            if len(self._names) < self.max_names:
                break
            if key in self._pinned or name.var.observed:
                continue
            del self._names[key]
            keys = self._by_object.get((key.namespace, key.service, key.label_value))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_object[(key.namespace, key.service, key.label_value)]
        if len(self._names) >= self.max_names:
            raise TooManyNamesError(f"io.l5d.k8s: more than {self.max_names} names in use")
        self._drop_unused_watches()

    def _drop_unused_watches(self) -> None:
        used = set()
        for key in self._names:
            used.add(("endpoints", key.namespace, key.service, key.label_value))
            if _numbered(key.port):
                used.add(("services", key.namespace, key.service, key.label_value))
        for wkey in [w for w in self._watches if w not in used]:
            self._watches.pop(wkey).close()

    def _watch(self, resource: str, key: NameKey) -> ObjectWatch:
        wkey = (resource, key.namespace, key.service, key.label_value)
        watch = self._watches.get(wkey)
        if watch is None:
            selector = (self.label_selector, key.label_value) if self.label_selector else None
            watch = ObjectWatch(self.client, key.namespace, resource, key.service, selector,
                                self._watch_changed, watch_timeout_s=self.watch_timeout_s)
            self._watches[wkey] = watch
            if self._loop is not None and not self._closed and not self._loop.is_closed():
                watch.start(self._loop)
        return watch

    def _watch_changed(self, watch: ObjectWatch) -> None:
        shape_changed = False
        label_value = watch.label_selector[1] if watch.label_selector is not None else None
        for key in list(self._by_object.get((watch.namespace, watch.name, label_value), ())):
            name = self._names.get(key)
            if name is not None:
                shape_changed |= self._recompute(name)
        if shape_changed:
            self._listeners.fire()

    def _recompute(self, name: _Name) -> bool:
        """Bring a name's AddrVar up to date; True when its shape changed."""
        shape, addr = self._resolve(name.key)
        name.var.set(addr)
        if shape != name.shape:
            name.shape = shape
            return True
        return False

    def _resolve(self, key: NameKey) -> tuple[str, Addr]:
        ep_watch = self._watches.get(("endpoints", key.namespace, key.service, key.label_value))
        if ep_watch is None or not ep_watch.known:
            return "pending", AddrPending
        view = endpoints_view(ep_watch.obj)
        if view is None:
            return "neg", AddrNeg
        ports, endpoints = view
        port_name = key.port
        if _numbered(key.port):
            svc_watch = self._watches.get(("services", key.namespace, key.service, key.label_value))
            if svc_watch is None or not svc_watch.known:
                return "pending", AddrPending
            mapping = service_port_map(svc_watch.obj) or {}
            target = mapping.get(int(key.port))
            if target is None:
                return "neg", AddrNeg
            if isinstance(target, int):
                return "bound", _addresses(endpoints, target)
            port_name = target
        number = ports.get(port_name)
        if number is None:
            return "neg", AddrNeg
        return "bound", _addresses(endpoints, number)

    # --- introspection (admin) ---------------------------------------------------------------------

    def object_watch(self, resource: str, namespace: str, name: str,
                     label_value: str | None = None) -> ObjectWatch | None:
        """The watch of one object ("endpoints" or "services"), if a name uses it."""
        return self._watches.get((resource, namespace, name, label_value))

    def names(self) -> list[Path]:
        out = []
        for key, name in self._names.items():
            if name.shape == "bound":
                labels = [key.namespace, key.port, key.service]
                if key.label_value is not None:
                    labels.append(key.label_value)
                out.append(self._id_prefix + Path.utf8(*labels))
        return out

    def state(self) -> dict:
        """Watch state for /namer_state/io.l5d.k8s.json (informational shape)."""
        from fastmesh.naming.delegator import addr_json

        return {
            "host": self.host, "port": self.port, "prefix": self.prefix.show,
            "labelSelector": self.label_selector,
            "watches": [w.state() for w in self._watches.values()],
            "names": {"/".join(["", key.namespace, key.port, key.service]
                               + ([key.label_value] if key.label_value is not None else [])):
                      {"shape": n.shape, "addr": addr_json(n.var.value)}
                      for key, n in self._names.items()},
        }


__all__ = ["K8sNamer", "NameKey", "TooManyNamesError", "endpoints_view", "service_port_map"]
