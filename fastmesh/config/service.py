"""A router's ``service`` section (§2.8): policy per *service name* (``/svc/world``).

``kind: io.l5d.global`` (the default) applies one :class:`ServiceParams` to every
service; ``kind: io.l5d.static`` holds ``configs: [{prefix, ...params}]`` matched against
the service name, every match applying in file order with later entries overriding
earlier ones key by key (:meth:`ServiceConfig.params_for`). The params decide which
responses count as failures and which may be retried, the retry budget and backoff, and
the total timeout across retries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .matcher import PathMatcher, as_path_matcher
from .policy import BACKOFF_KINDS, BackoffConfig, ConstantBackoffConfig, RetryBudgetConfig
from .schema import ConfigNode, KindFamily, ParseContext, as_int, as_str, key, list_of, node_of, parse_node

__all__ = [
    "ResponseClassifierConfig", "RESPONSE_CLASSIFIER_KINDS", "RetriesConfig", "ServiceParams",
    "StaticServiceEntry", "ServiceConfig", "SERVICE_KINDS", "DEFAULT_RESPONSE_CLASSIFIER",
]

# §9.4: the HTTP response classifiers, by the methods whose 5xx responses may be retried.
RESPONSE_CLASSIFIER_RETRYABLE_METHODS: dict[str, frozenset[str]] = {
    "io.l5d.http.nonRetryable5XX": frozenset(),
    "io.l5d.http.retryableRead5XX": frozenset({"GET", "HEAD", "OPTIONS", "TRACE"}),
    "io.l5d.http.retryableIdempotent5XX": frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}),
    "io.l5d.http.retryableAll5XX": frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE",
                                              "POST", "PATCH"}),  # and any other method
    "io.l5d.http.allSuccessful": frozenset(),
}

DEFAULT_RESPONSE_CLASSIFIER = "io.l5d.http.nonRetryable5XX"


@dataclass(frozen=True, kw_only=True)
class ResponseClassifierConfig(ConfigNode):
    """``responseClassifier``: which responses are failures, and which are retryable."""

    kind: str = key("kind", as_str, DEFAULT_RESPONSE_CLASSIFIER, always_emit=True)

    @property
    def retryable_methods(self) -> frozenset[str]:
        """The standard methods whose 5xx (or retryable exception) may be retried."""
        return RESPONSE_CLASSIFIER_RETRYABLE_METHODS[self.kind]

    def is_retryable_method(self, method: str) -> bool:
        """May a failed ``method`` request be retried under this classifier?"""
        if self.kind == "io.l5d.http.retryableAll5XX":
            return True
        return method.upper() in self.retryable_methods

    @property
    def counts_5xx_as_failure(self) -> bool:
        return self.kind != "io.l5d.http.allSuccessful"


RESPONSE_CLASSIFIER_KINDS = KindFamily(
    "response classifier kind",
    {kind: ResponseClassifierConfig for kind in RESPONSE_CLASSIFIER_RETRYABLE_METHODS},
    # linkerd's h2 classifiers exist but only apply to h2 routers.
    unsupported=frozenset({"io.l5d.h2.nonRetryable5XX", "io.l5d.h2.retryableRead5XX",
                           "io.l5d.h2.retryableIdempotent5XX", "io.l5d.h2.retryableAll5XX",
                           "io.l5d.h2.allSuccessful", "io.l5d.h2.grpc.default",
                           "io.l5d.h2.grpc.neverRetryable", "io.l5d.h2.grpc.alwaysRetryable",
                           "io.l5d.h2.grpc.retryableStatusCodes"}),
)


@dataclass(frozen=True, kw_only=True)
class RetriesConfig(ConfigNode):
    """``retries``: the per-service retry budget and the wait between retries."""

    budget: RetryBudgetConfig = key("budget", node_of(RetryBudgetConfig),
                                    default_factory=RetryBudgetConfig)
    backoff: BackoffConfig = key("backoff", BACKOFF_KINDS, default_factory=ConstantBackoffConfig)


@dataclass(frozen=True, kw_only=True)
class ServiceParams(ConfigNode):
    """The service parameters, with linkerd's defaults for every key the file left out."""

    response_classifier: ResponseClassifierConfig = key(
        "responseClassifier", RESPONSE_CLASSIFIER_KINDS, default_factory=ResponseClassifierConfig)
    retries: RetriesConfig = key("retries", node_of(RetriesConfig), default_factory=RetriesConfig)
    total_timeout_ms: int | None = key("totalTimeoutMs", as_int(1), None)

    def overridden_by(self, later: ServiceParams) -> ServiceParams:
        """These params with every key ``later`` set explicitly taken from ``later``."""
        changes = {f.name: getattr(later, f.name) for f in dataclasses.fields(later)
                   if f.metadata.get("yaml_key") in later.explicit_keys}
        return dataclasses.replace(self, explicit_keys=self.explicit_keys | later.explicit_keys,
                                   **changes)


@dataclass(frozen=True, kw_only=True)
class StaticServiceEntry(ConfigNode):
    """One ``configs`` entry of a static service config: a prefix and the params it sets."""

    prefix: PathMatcher = key("prefix", as_path_matcher, required=True)
    params: ServiceParams = dataclasses.field(default_factory=ServiceParams)

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix.text, **self.params.to_json()}


def _static_service_entry(value: Any, path: str, ctx: ParseContext) -> StaticServiceEntry:
    params = parse_node(ServiceParams, value, path, ctx, extra_keys=("prefix",))
    entry = parse_node(StaticServiceEntry, {"prefix": value.get("prefix")}, path, ctx)
    return dataclasses.replace(entry, params=params)


@dataclass(frozen=True, kw_only=True)
class _StaticServiceKeys(ConfigNode):
    kind: str = key("kind", as_str, "io.l5d.static")
    configs: tuple[StaticServiceEntry, ...] = key("configs", list_of(_static_service_entry),
                                                  required=True)


@dataclass(frozen=True, kw_only=True)
class ServiceConfig(ConfigNode):
    """``service``: global params, or static per-prefix params; see :meth:`params_for`."""

    kind: str = key("kind", as_str, "io.l5d.global", always_emit=True)
    params: ServiceParams = dataclasses.field(default_factory=ServiceParams)
    configs: tuple[StaticServiceEntry, ...] = ()

    def params_for(self, service_name: str) -> ServiceParams:
        """The params that apply to ``service_name`` (a shown path such as ``/svc/world``)."""
        if self.kind != "io.l5d.static":
            return self.params
        result = ServiceParams()
        for entry in self.configs:
            if entry.prefix.match(str(service_name)) is not None:
                result = result.overridden_by(entry.params)
        return result

    def to_json(self) -> dict[str, Any]:
        if self.kind == "io.l5d.static":
            return {"kind": self.kind, "configs": [e.to_json() for e in self.configs]}
        return {"kind": self.kind, **self.params.to_json()}


class _ServiceKinds(KindFamily):
    """``service`` dispatch: global configs carry params inline, static ones a list."""

    def __call__(self, value: Any, path: str, ctx: ParseContext) -> ServiceConfig:
        kind = (value.get("kind") or self.default) if isinstance(value, dict) else None
        if kind == "io.l5d.global":
            params = parse_node(ServiceParams, value, path, ctx, extra_keys=("kind",))
            return ServiceConfig(kind=kind, params=params,
                                 explicit_keys=params.explicit_keys | ({"kind"} & set(value)))
        if kind == "io.l5d.static":
            configs = parse_node(_StaticServiceKeys, value, path, ctx).configs
            return ServiceConfig(kind=kind, configs=configs,
                                 explicit_keys=frozenset(value) & {"kind", "configs"})
        return super().__call__(value, path, ctx)  # reports the bad kind or shape


SERVICE_KINDS = _ServiceKinds("service kind", {"io.l5d.global": ServiceConfig,
                                               "io.l5d.static": ServiceConfig},
                              default="io.l5d.global")
