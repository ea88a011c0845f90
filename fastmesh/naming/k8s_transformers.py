"""The Kubernetes DaemonSet transformers: ``io.l5d.k8s.daemonset`` and ``io.l5d.k8s.localnode``.

Role in the data path: in linkerd's DaemonSet layout every node runs one proxy. On the
*outgoing* router the daemonset transformer replaces each destination pod with the proxy
on that pod's node (so the hop between nodes is proxy to proxy, over TLS); on the
*incoming* router the localnode transformer keeps only the pods on this node. Both
rewrite the bound leaves of the router's tree (never its shape) and give every leaf a
derived AddrVar, so endpoint changes on either side flow through without a re-bind.

``io.l5d.k8s.daemonset`` (spec §5.2): the gateways are the endpoints of
``/<namespace>/<port>/<service>`` (e.g. ``/default/incoming/l5d``) read through its own
Kubernetes client (``k8sHost:k8sPort``). Each destination address maps to every gateway
that is *local* to it — same /24 (IPv4 against IPv4 only), or with ``hostNetwork: true``
the same ``nodeName`` metadata (two addresses without it count as equal). The union is
the new address set; empty → ``AddrNeg``. While the gateways are unknown the leaf is
pending; when they are Neg or failed there are none. Ids become
``/%/io.l5d.k8s.daemonset/<ns>/<port>/<svc>`` ++ id.

``io.l5d.k8s.localnode`` (spec §5.3): with ``hostNetwork: false`` keep the addresses in
``POD_IP``'s /24 (id ``/%/io.l5d.k8s.localnode/<POD_IP>`` ++ id), with ``hostNetwork:
true`` those whose ``nodeName`` is ``NODE_NAME`` (id ``.../<NODE_NAME>`` ++ id). The
variable is read at start-up; missing, it is a start-up error with linkerd's text.
Nothing left → ``AddrNeg``; pending, failed and neg pass through.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Mapping, Protocol

from .addr import Addr, Address, AddrBound, AddrNeg, AddrPending, AddrVar, BoundName, DerivedAddrVar
from .addr import ip_of, normalize_host
from .path import Path
from .transformers import FilteringTransformer, Transformer

DAEMONSET_KIND = "io.l5d.k8s.daemonset"
LOCALNODE_KIND = "io.l5d.k8s.localnode"
POD_IP_ENV = "POD_IP"
NODE_NAME_ENV = "NODE_NAME"
POD_IP_MISSING = "POD_IP env variable must be set to the pod's IP"
NODE_NAME_MISSING = "NODE_NAME env variable must be set to the node's name"
SUBNET_MASK_V4 = 0xFFFFFF00  # 255.255.255.0: every node has its own /24 pod CIDR


class GatewaySource(Protocol):
    """Where the daemonset transformer's gateway addresses come from."""

    def addr_var(self, path: Path) -> AddrVar: ...

    def start(self, loop: Any = None) -> None: ...

    def close(self) -> None: ...


def same_subnet(a: Address, b: Address) -> bool:
    """Both IPv4 literals in the same /24 (linkerd's Netmask 255.255.255.0: an IPv6
    address has 16 bytes against the mask's 4, so it never matches)."""
    ip_a, ip_b = ip_of(a.host), ip_of(b.host)
    if not isinstance(ip_a, ipaddress.IPv4Address) or not isinstance(ip_b, ipaddress.IPv4Address):
        return False
    return (int(ip_a) & SUBNET_MASK_V4) == (int(ip_b) & SUBNET_MASK_V4)


def same_node(a: Address, b: Address) -> bool:
    """Equal ``nodeName`` metadata (both missing counts as equal)."""
    return a.node_name == b.node_name


class DaemonSetTransformer(Transformer):
    """``io.l5d.k8s.daemonset``: destination pods → the node proxies in front of them."""

    kind = DAEMONSET_KIND

    def __init__(self, prefix: Path, gateways: GatewaySource, gateway_path: Path,
                 host_network: bool = False):
        super().__init__(prefix)
        self.gateways = gateways
        self.gateway_path = gateway_path
        self.host_network = host_network
        self.local = same_node if host_network else same_subnet
        # linkerd's class names, as its delegator shows them
        self.name = "MetadataGatewayTransformer" if host_network else "SubnetGatewayTransformer"
        self._gateway_var: AddrVar | None = None

    @property
    def gateway_var(self) -> AddrVar:
        """The gateways' AddrVar (pending until the API answered); made on first use."""
        if self._gateway_var is None:
            self._gateway_var = self.gateways.addr_var(self.gateway_path)
        return self._gateway_var

    def select(self, dst: Addr, gateways: Addr) -> Addr:
        if not isinstance(dst, AddrBound):
            return dst  # pending, neg and failed destinations pass through
        if gateways is AddrPending:
            return AddrPending
        if not isinstance(gateways, AddrBound):
            return AddrNeg  # no gateway service or port: nothing is routable
        chosen = frozenset(gw for d in dst.addresses for gw in gateways.addresses if self.local(d, gw))
        if not chosen:
            return AddrNeg
        return AddrBound(chosen, dst.meta)

    def map_bound(self, bound: BoundName) -> BoundName:
        var = DerivedAddrVar((bound.addr, self.gateway_var), self.select)
        return BoundName(self.prefix + bound.id, var, bound.residual)

    def start(self, loop: Any = None) -> None:
        """Start the gateway watch now, so it is ready before the first request."""
        _ = self.gateway_var
        self.gateways.start(loop)

    def close(self) -> None:
        self.gateways.close()


class LocalNodeSubnetTransformer(FilteringTransformer):
    """``io.l5d.k8s.localnode`` (``hostNetwork: false``): keep POD_IP's /24."""

    kind = LOCALNODE_KIND
    name = "SubnetLocalTransformer"  # linkerd's class name

    def __init__(self, prefix: Path, pod_ip: str):
        super().__init__(prefix)
        self.pod_ip = pod_ip
        self._local = Address(pod_ip, 0)

    def predicate(self, address: Address) -> bool:
        return same_subnet(address, self._local)


class LocalNodeNameTransformer(FilteringTransformer):
    """``io.l5d.k8s.localnode`` (``hostNetwork: true``): keep NODE_NAME's addresses."""

    kind = LOCALNODE_KIND
    name = "MetadataFiltertingNameTreeTransformer"  # sic, linkerd's class name

    def __init__(self, prefix: Path, node_name: str):
        super().__init__(prefix)
        self.node_name = node_name

    def predicate(self, address: Address) -> bool:
        return address.node_name == self.node_name  # no metadata: dropped


# --- construction ------------------------------------------------------------------------------


def _check_keys(kind: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    for key in params:
        if key not in allowed | {"kind", "prefix"}:
            raise ValueError(f"{kind}: unknown key '{key}'")


def _as_bool(kind: str, key: str, value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{kind}: {key} must be true or false, got {value!r}")
    return value


def _prefix(kind: str, params: Mapping[str, Any], default: Path) -> Path:
    from .transformers import transformer_prefix
    from .path import ParseError

    value = params.get("prefix")
    if value is None:
        return transformer_prefix(default)
    if isinstance(value, Path):
        return transformer_prefix(value)
    try:
        return transformer_prefix(Path.read(str(value)))
    except ParseError as exc:
        raise ValueError(f"{kind}: invalid prefix: {exc}") from None


def build_daemonset(params: Mapping[str, Any]) -> DaemonSetTransformer:
    """``io.l5d.k8s.daemonset`` from its config keys; its k8s client starts with ``start()``."""
    kind = DAEMONSET_KIND
    _check_keys(kind, params, {"namespace", "service", "port", "hostNetwork", "k8sHost", "k8sPort"})
    values = {}
    for key in ("namespace", "service", "port"):
        value = params.get(key)
        if value is None or str(value) == "":
            raise ValueError(f"{kind}: '{key}' is required")
        values[key] = str(value)
    host = str(params.get("k8sHost") or "localhost")
    port = params.get("k8sPort", 8001)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ValueError(f"{kind}: k8sPort must be an integer in 1..65535, got {port!r}")
    host_network = _as_bool(kind, "hostNetwork", params.get("hostNetwork"))
    gateway_path = Path.utf8(values["namespace"], values["port"], values["service"])
    prefix = _prefix(kind, params, Path.utf8(kind) + gateway_path)
    from fastmesh.namers.k8s import K8sNamer  # the transformer's own client (spec §2.5)

    return DaemonSetTransformer(prefix, K8sNamer(host, port), gateway_path, host_network)


def build_localnode(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Transformer:
    """``io.l5d.k8s.localnode``; reads POD_IP (or NODE_NAME with hostNetwork) now."""
    kind = LOCALNODE_KIND
    env = os.environ if environ is None else environ
    _check_keys(kind, params, {"hostNetwork"})
    base = _prefix(kind, params, Path.utf8(kind))
    if _as_bool(kind, "hostNetwork", params.get("hostNetwork")):
        node_name = env.get(NODE_NAME_ENV) or ""
        if not node_name:
            raise ValueError(NODE_NAME_MISSING)
        return LocalNodeNameTransformer(base + Path.utf8(node_name), node_name)
    pod_ip = (env.get(POD_IP_ENV) or "").strip()
    if not pod_ip:
        raise ValueError(POD_IP_MISSING)
    literal = normalize_host(pod_ip)
    if ip_of(literal) is None:
        try:  # linkerd resolves it (InetAddress.getByName); start-up time, so blocking is fine
            literal = socket.gethostbyname(pod_ip)
        except OSError as exc:
            raise ValueError(f"{POD_IP_ENV}={pod_ip!r} is not an IP address: {exc}") from None
    return LocalNodeSubnetTransformer(base + Path.utf8(pod_ip), literal)


__all__ = [
    "DaemonSetTransformer",
    "LocalNodeNameTransformer",
    "LocalNodeSubnetTransformer",
    "build_daemonset",
    "build_localnode",
    "same_node",
    "same_subnet",
]
