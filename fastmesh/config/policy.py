"""Client and service policy sections (§9): load balancers, failure accrual, retry
budgets and backoffs.

These say how a router's clients pick an endpoint, when an endpoint is marked dead and
for how long, and how many requeues/retries the budget allows. Defaults are linkerd's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, join_path
from .schema import ConfigNode, KindFamily, ParseContext, as_bool, as_float, as_int, as_str, key

__all__ = [
    "BackoffConfig", "ConstantBackoffConfig", "JitteredBackoffConfig", "BACKOFF_KINDS",
    "RetryBudgetConfig",
    "LoadBalancerConfig", "P2cLoadBalancerConfig", "EwmaLoadBalancerConfig",
    "ApertureLoadBalancerConfig", "HeapLoadBalancerConfig", "RoundRobinLoadBalancerConfig",
    "LOAD_BALANCER_KINDS",
    "FailureAccrualConfig", "ConsecutiveFailuresConfig", "SuccessRateConfig",
    "SuccessRateWindowedConfig", "NoFailureAccrualConfig", "FAILURE_ACCRUAL_KINDS",
]

_non_negative = as_int(0)


# --- backoff ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BackoffConfig(ConfigNode):
    """A backoff between retries, or between failure-accrual probes."""

    kind: str = key("kind", as_str, required=True, always_emit=True)


@dataclass(frozen=True, kw_only=True)
class ConstantBackoffConfig(BackoffConfig):
    """``{kind: constant, ms}``: the same wait every time."""

    kind: str = key("kind", as_str, "constant", always_emit=True)
    ms: int = key("ms", _non_negative, 0)


@dataclass(frozen=True, kw_only=True)
class JitteredBackoffConfig(BackoffConfig):
    """``{kind: jittered, minMs, maxMs}``: decorrelated jitter between the bounds."""

    kind: str = key("kind", as_str, "jittered", always_emit=True)
    min_ms: int = key("minMs", _non_negative, required=True)
    max_ms: int = key("maxMs", _non_negative, required=True)

    def check(self, path: str, ctx: ParseContext) -> None:
        if self.min_ms > self.max_ms:
            raise ConfigError(join_path(path, "maxMs"),
                              f"maxMs ({self.max_ms}) must not be less than minMs ({self.min_ms})")


BACKOFF_KINDS = KindFamily("backoff kind", {
    "constant": ConstantBackoffConfig,
    "jittered": JitteredBackoffConfig,
})


# --- retry budget -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryBudgetConfig(ConfigNode):
    """``requeueBudget`` / ``retries.budget``: a token bucket limiting re-sends (§9.3)."""

    ttl_secs: int = key("ttlSecs", as_int(1, 60), 10)
    min_retries_per_sec: int = key("minRetriesPerSec", _non_negative, 10)
    percent_can_retry: float = key("percentCanRetry", as_float(0.0, 1000.0), 0.2)


# --- load balancers -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LoadBalancerConfig(ConfigNode):
    """``loadBalancer``: how a client picks one endpoint of its address set (§9.1)."""

    kind: str = key("kind", as_str, required=True, always_emit=True)
    enable_probation: bool = key("enableProbation", as_bool, False)


@dataclass(frozen=True, kw_only=True)
class P2cLoadBalancerConfig(LoadBalancerConfig):
    """Power of two choices, least outstanding requests (the default)."""

    kind: str = key("kind", as_str, "p2c", always_emit=True)
    max_effort: int = key("maxEffort", as_int(1), 5)


@dataclass(frozen=True, kw_only=True)
class EwmaLoadBalancerConfig(LoadBalancerConfig):
    """Power of two choices over a peak-EWMA latency cost."""

    kind: str = key("kind", as_str, "ewma", always_emit=True)
    max_effort: int = key("maxEffort", as_int(1), 5)
    decay_time_ms: int = key("decayTimeMs", as_int(1), 10000)


@dataclass(frozen=True, kw_only=True)
class ApertureLoadBalancerConfig(LoadBalancerConfig):
    kind: str = key("kind", as_str, "aperture", always_emit=True)
    max_effort: int = key("maxEffort", as_int(1), 5)
    smooth_window_ms: int = key("smoothWindowMs", as_int(1), 5000)
    low_load: float = key("lowLoad", as_float(0.0), 0.5)
    high_load: float = key("highLoad", as_float(0.0), 2.0)
    min_aperture: int = key("minAperture", as_int(1), 1)

    def check(self, path: str, ctx: ParseContext) -> None:
        if self.low_load > self.high_load:
            raise ConfigError(join_path(path, "highLoad"),
                              f"highLoad ({self.high_load}) must not be less than lowLoad "
                              f"({self.low_load})")


@dataclass(frozen=True, kw_only=True)
class HeapLoadBalancerConfig(LoadBalancerConfig):
    kind: str = key("kind", as_str, "heap", always_emit=True)


@dataclass(frozen=True, kw_only=True)
class RoundRobinLoadBalancerConfig(LoadBalancerConfig):
    kind: str = key("kind", as_str, "roundRobin", always_emit=True)
    max_effort: int = key("maxEffort", as_int(1), 5)


LOAD_BALANCER_KINDS = KindFamily("load balancer kind", {
    "p2c": P2cLoadBalancerConfig,
    "ewma": EwmaLoadBalancerConfig,
    "aperture": ApertureLoadBalancerConfig,
    "heap": HeapLoadBalancerConfig,
    "roundRobin": RoundRobinLoadBalancerConfig,
})


# --- failure accrual -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FailureAccrualConfig(ConfigNode):
    """``failureAccrual``: when to mark an endpoint dead, and the backoff before probing.

    ``backoff`` None means linkerd's default: equal-jittered from 5 s up to 300 s (§9.2),
    which has no config spelling of its own.
    """

    kind: str = key("kind", as_str, required=True, always_emit=True)
    backoff: BackoffConfig | None = key("backoff", BACKOFF_KINDS, None)


@dataclass(frozen=True, kw_only=True)
class ConsecutiveFailuresConfig(FailureAccrualConfig):
    """Dead after ``failures`` failures in a row (default policy: 5)."""

    kind: str = key("kind", as_str, "io.l5d.consecutiveFailures", always_emit=True)
    failures: int = key("failures", as_int(1), required=True)


@dataclass(frozen=True, kw_only=True)
class SuccessRateConfig(FailureAccrualConfig):
    """Dead when the success rate over the last ``requests`` falls below ``successRate``."""

    kind: str = key("kind", as_str, "io.l5d.successRate", always_emit=True)
    success_rate: float = key("successRate", as_float(0.0, 1.0), required=True)
    requests: int = key("requests", as_int(1), required=True)


@dataclass(frozen=True, kw_only=True)
class SuccessRateWindowedConfig(FailureAccrualConfig):
    """Dead when the success rate over the last ``window`` seconds is below ``successRate``."""

    kind: str = key("kind", as_str, "io.l5d.successRateWindowed", always_emit=True)
    success_rate: float = key("successRate", as_float(0.0, 1.0), required=True)
    window: int = key("window", as_int(1), required=True)


@dataclass(frozen=True, kw_only=True)
class NoFailureAccrualConfig(FailureAccrualConfig):
    """``kind: none``: endpoints are never marked dead."""

    kind: str = key("kind", as_str, "none", always_emit=True)


FAILURE_ACCRUAL_KINDS = KindFamily("failure accrual kind", {
    "io.l5d.consecutiveFailures": ConsecutiveFailuresConfig,
    "io.l5d.successRate": SuccessRateConfig,
    "io.l5d.successRateWindowed": SuccessRateWindowedConfig,
    "none": NoFailureAccrualConfig,
})
