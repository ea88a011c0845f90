"""A router's ``client`` section (§2.7): how fastmesh talks to the endpoints it routes to.

``kind: io.l5d.global`` (the default) applies one :class:`ClientParams` to every client.
``kind: io.l5d.static`` holds ``configs: [{prefix, ...params}]``; for a client id (the
bound name, e.g. ``/%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/world``)
every entry whose prefix matches applies in file order, later ones overriding earlier
ones key by key, and ``{var}`` captures are substituted into ``tls.commonName``.
:meth:`ClientConfig.params_for` does that resolution.

Client ``tls`` is what makes the outgoing router speak TLS to the next fastmesh: SNI and
the verified name are ``commonName`` (``linkerd`` in the reference deployment).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, join_path
from .matcher import PathMatcher, as_path_matcher, substitute
from .policy import (FAILURE_ACCRUAL_KINDS, LOAD_BALANCER_KINDS, ConsecutiveFailuresConfig,
                     FailureAccrualConfig, LoadBalancerConfig, P2cLoadBalancerConfig,
                     RetryBudgetConfig)
from .schema import (ConfigNode, KindFamily, ParseContext, as_bool, as_int, as_str, key,
                     list_of, node_of, parse_node)
from .servers import SocketOptionsConfig

__all__ = [
    "ClientAuthConfig", "ClientTlsConfig", "HostConnectionPoolConfig", "ClientSessionConfig",
    "ClientParams", "StaticClientEntry", "ClientConfig", "CLIENT_KINDS",
]

_non_negative = as_int(0)


@dataclass(frozen=True, kw_only=True)
class ClientAuthConfig(ConfigNode):
    """``tls.clientAuth``: the client certificate fastmesh presents (PKCS#8 key)."""

    cert_path: str = key("certPath", as_str, required=True)
    key_path: str = key("keyPath", as_str, required=True)
    intermediate_certs_path: str | None = key("intermediateCertsPath", as_str, None)


@dataclass(frozen=True, kw_only=True)
class ClientTlsConfig(ConfigNode):
    """Client ``tls``: connect to endpoints over TLS, verifying them as ``common_name``.

    ``trust_certs`` files are concatenated into one trust bundle (deprecated in linkerd);
    ``trust_certs_bundle`` is one bundle file; neither means the system trust store.
    """

    enabled: bool = key("enabled", as_bool, True)
    disable_validation: bool = key("disableValidation", as_bool, False)
    common_name: str | None = key("commonName", as_str, None)
    trust_certs: tuple[str, ...] | None = key("trustCerts", list_of(as_str), None)
    trust_certs_bundle: str | None = key("trustCertsBundle", as_str, None)
    client_auth: ClientAuthConfig | None = key("clientAuth", node_of(ClientAuthConfig), None)
    protocols: tuple[str, ...] | None = key("protocols", list_of(as_str), None)

    def check(self, path: str, ctx: ParseContext) -> None:
        if self.trust_certs is not None and self.trust_certs_bundle is not None:
            raise ConfigError(path, "trustCerts and trustCertsBundle cannot both be set "
                                    "(use trustCertsBundle)")
        if self.disable_validation and self.client_auth is not None:
            raise ConfigError(path, "disableValidation: true is incompatible with clientAuth")
        if self.enabled and not self.disable_validation and not self.common_name:
            raise ConfigError(path, "tls is configured with validation but commonName is not set")
        if self.trust_certs is not None:
            ctx.warn(join_path(path, "trustCerts"), "trustCerts is deprecated, "
                                                   "prefer one trustCertsBundle file")


@dataclass(frozen=True, kw_only=True)
class HostConnectionPoolConfig(ConfigNode):
    """``hostConnectionPool``: per-endpoint connection pool bounds (None = unbounded)."""

    min_size: int = key("minSize", _non_negative, 0)
    max_size: int | None = key("maxSize", as_int(1), None)
    idle_time_ms: int | None = key("idleTimeMs", _non_negative, None)
    max_waiters: int | None = key("maxWaiters", _non_negative, None)

    def check(self, path: str, ctx: ParseContext) -> None:
        if self.max_size is not None and self.min_size > self.max_size:
            raise ConfigError(join_path(path, "maxSize"),
                              f"maxSize ({self.max_size}) must not be less than minSize "
                              f"({self.min_size})")


@dataclass(frozen=True, kw_only=True)
class ClientSessionConfig(ConfigNode):
    """``clientSession``: retire upstream connections when idle or old."""

    idle_time_ms: int | None = key("idleTimeMs", _non_negative, None)
    life_time_ms: int | None = key("lifeTimeMs", _non_negative, None)


def _no_request_authorizers(value: Any, path: str, ctx: ParseContext) -> tuple[()]:
    items = list_of(lambda v, p, c: v)(value, path, ctx)
    if items:
        raise ConfigError(join_path(path, 0), "requestAuthorizers are not supported by fastmesh")
    return ()


@dataclass(frozen=True, kw_only=True)
class ClientParams(ConfigNode):
    """The client parameters, with linkerd's defaults for every key the file left out."""

    tls: ClientTlsConfig | None = key("tls", node_of(ClientTlsConfig), None)
    load_balancer: LoadBalancerConfig = key("loadBalancer", LOAD_BALANCER_KINDS,
                                            default_factory=P2cLoadBalancerConfig)
    failure_accrual: FailureAccrualConfig = key(
        "failureAccrual", FAILURE_ACCRUAL_KINDS,
        default_factory=lambda: ConsecutiveFailuresConfig(failures=5))
    requeue_budget: RetryBudgetConfig = key("requeueBudget", node_of(RetryBudgetConfig),
                                            default_factory=RetryBudgetConfig)
    request_attempt_timeout_ms: int | None = key("requestAttemptTimeoutMs", as_int(1), None)
    fail_fast: bool = key("failFast", as_bool, False)
    host_connection_pool: HostConnectionPoolConfig = key(
        "hostConnectionPool", node_of(HostConnectionPoolConfig),
        default_factory=HostConnectionPoolConfig)
    client_session: ClientSessionConfig | None = key("clientSession", node_of(ClientSessionConfig), None)
    socket_options: SocketOptionsConfig | None = key("socketOptions", node_of(SocketOptionsConfig), None)
    # HTTP client keys
    forward_client_cert: bool = key("forwardClientCert", as_bool, False)
    request_authorizers: tuple[()] = key("requestAuthorizers", _no_request_authorizers, ())

    def overridden_by(self, later: ClientParams) -> ClientParams:
        """These params with every key ``later`` set explicitly taken from ``later``."""
        changes = {f.name: getattr(later, f.name) for f in dataclasses.fields(later)
                   if f.metadata.get("yaml_key") in later.explicit_keys}
        return dataclasses.replace(self, explicit_keys=self.explicit_keys | later.explicit_keys,
                                   **changes)


@dataclass(frozen=True, kw_only=True)
class StaticClientEntry(ConfigNode):
    """One ``configs`` entry of a static client: a prefix and the params it sets."""

    prefix: PathMatcher = key("prefix", as_path_matcher, required=True)
    params: ClientParams = dataclasses.field(default_factory=ClientParams)

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix.text, **self.params.to_json()}


def _static_client_entry(value: Any, path: str, ctx: ParseContext) -> StaticClientEntry:
    params = parse_node(ClientParams, value, path, ctx, extra_keys=("prefix",))
    entry = parse_node(StaticClientEntry, {"prefix": value.get("prefix")}, path, ctx)
    tls = params.tls
    if tls is not None and tls.common_name:
        # A {var} the prefix does not capture would reach the TLS handshake literally.
        for name in _placeholders(tls.common_name) - entry.prefix.variables:
            raise ConfigError(join_path(path, "tls.commonName"),
                              f"'{{{name}}}' is not captured by prefix '{entry.prefix.text}'")
    return dataclasses.replace(entry, params=params)


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{([^{}/]+)\}", text))


@dataclass(frozen=True, kw_only=True)
class ClientConfig(ConfigNode):
    """``client``: global params, or static per-prefix params; see :meth:`params_for`."""

    kind: str = key("kind", as_str, "io.l5d.global", always_emit=True)
    params: ClientParams = dataclasses.field(default_factory=ClientParams)
    configs: tuple[StaticClientEntry, ...] = ()

    def params_for(self, client_id: str) -> ClientParams:
        """The params that apply to client ``client_id`` (a shown bound name)."""
        if self.kind != "io.l5d.static":
            return self.params
        result = ClientParams()
        for entry in self.configs:
            captures = entry.prefix.match(str(client_id))
            if captures is None:
                continue
            params = entry.params
            if params.tls is not None and params.tls.common_name and captures:
                tls = dataclasses.replace(params.tls,
                                          common_name=substitute(params.tls.common_name, captures))
                params = dataclasses.replace(params, tls=tls)
            result = result.overridden_by(params)
        return result

    def to_json(self) -> dict[str, Any]:
        if self.kind == "io.l5d.static":
            return {"kind": self.kind, "configs": [e.to_json() for e in self.configs]}
        return {"kind": self.kind, **self.params.to_json()}


def _parse_global_client(value: Any, path: str, ctx: ParseContext) -> ClientConfig:
    params = parse_node(ClientParams, value, path, ctx, extra_keys=("kind",))
    return ClientConfig(kind="io.l5d.global", params=params,
                        explicit_keys=params.explicit_keys | ({"kind"} & set(value)))


def _parse_static_client(value: Any, path: str, ctx: ParseContext) -> ClientConfig:
    configs = parse_node(_StaticClientKeys, value, path, ctx).configs
    return ClientConfig(kind="io.l5d.static", configs=configs,
                        explicit_keys=frozenset(value) & {"kind", "configs"})


@dataclass(frozen=True, kw_only=True)
class _StaticClientKeys(ConfigNode):
    kind: str = key("kind", as_str, "io.l5d.static")
    configs: tuple[StaticClientEntry, ...] = key("configs", list_of(_static_client_entry),
                                                 required=True)


class _ClientKinds(KindFamily):
    """``client`` dispatch: global clients carry their params inline, static ones a list."""

    def __call__(self, value: Any, path: str, ctx: ParseContext) -> ClientConfig:
        kind = (value.get("kind") or self.default) if isinstance(value, dict) else None
        if kind == "io.l5d.global":
            return _parse_global_client(value, path, ctx)
        if kind == "io.l5d.static":
            return _parse_static_client(value, path, ctx)
        return super().__call__(value, path, ctx)  # reports the bad kind or shape


CLIENT_KINDS = _ClientKinds("client kind", {"io.l5d.global": ClientConfig,
                                            "io.l5d.static": ClientConfig},
                            default="io.l5d.global")
