"""``telemetry`` and ``usage`` (§2.9): metrics endpoints, tracing and linkerd's phone-home.

``io.l5d.prometheus`` adds the admin's Prometheus endpoint and ``io.l5d.recentRequests``
its ``/requests`` page; the other kinds are parsed so that a linkerd config loads, and
the runtime refuses the ones it cannot run. ``usage`` is accepted and never acted on:
fastmesh does not phone home.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import ConfigNode, KindFamily, as_bool, as_float, as_int, as_port, as_str, key

__all__ = [
    "TelemeterConfig", "PrometheusTelemeterConfig", "RecentRequestsTelemeterConfig",
    "ZipkinTelemeterConfig", "StatsdTelemeterConfig", "TracelogTelemeterConfig",
    "InfluxDbTelemeterConfig", "TELEMETER_KINDS", "UsageConfig",
]

_SAMPLE_RATE_MESSAGE = "sampleRate must be between 0.0 and 1.0"
_sample_rate = as_float(0.0, 1.0, message=_SAMPLE_RATE_MESSAGE)


@dataclass(frozen=True, kw_only=True)
class TelemeterConfig(ConfigNode):
    kind: str = key("kind", as_str, required=True, always_emit=True)
    experimental: bool = key("experimental", as_bool, False)


@dataclass(frozen=True, kw_only=True)
class PrometheusTelemeterConfig(TelemeterConfig):
    """``io.l5d.prometheus``: serve metrics at admin ``path``, names prefixed by ``prefix``."""

    kind: str = key("kind", as_str, "io.l5d.prometheus", always_emit=True)
    path: str = key("path", as_str, "/admin/metrics/prometheus")
    prefix: str = key("prefix", as_str, "")


@dataclass(frozen=True, kw_only=True)
class RecentRequestsTelemeterConfig(TelemeterConfig):
    """``io.l5d.recentRequests``: keep the last ``capacity`` sampled requests for the admin."""

    kind: str = key("kind", as_str, "io.l5d.recentRequests", always_emit=True)
    sample_rate: float = key("sampleRate", _sample_rate, required=True)
    capacity: int = key("capacity", as_int(1), 10)


@dataclass(frozen=True, kw_only=True)
class ZipkinTelemeterConfig(TelemeterConfig):
    """``io.l5d.zipkin``: export spans to a Zipkin Scribe collector (runtime: not yet)."""

    kind: str = key("kind", as_str, "io.l5d.zipkin", always_emit=True)
    host: str = key("host", as_str, "localhost")
    port: int = key("port", as_port, 9410)
    sample_rate: float = key("sampleRate", _sample_rate, 0.001)


@dataclass(frozen=True, kw_only=True)
class StatsdTelemeterConfig(TelemeterConfig):
    """``io.l5d.statsd`` (experimental in linkerd): metrics over UDP (runtime: not yet)."""

    kind: str = key("kind", as_str, "io.l5d.statsd", always_emit=True)
    prefix: str = key("prefix", as_str, "linkerd")
    hostname: str = key("hostname", as_str, "127.0.0.1")
    port: int = key("port", as_port, 8125)
    gauge_interval_ms: int = key("gaugeIntervalMs", as_int(1), 10000)
    sample_rate: float = key("sampleRate", _sample_rate, 0.01)


@dataclass(frozen=True, kw_only=True)
class TracelogTelemeterConfig(TelemeterConfig):
    """``io.l5d.tracelog``: log sampled trace annotations (runtime: not yet)."""

    kind: str = key("kind", as_str, "io.l5d.tracelog", always_emit=True)
    host: str = key("host", as_str, "localhost")
    sample_rate: float = key("sampleRate", _sample_rate, 1.0)
    level: str = key("level", as_str, "INFO")


@dataclass(frozen=True, kw_only=True)
class InfluxDbTelemeterConfig(TelemeterConfig):
    """``io.l5d.influxdb``: metrics in InfluxDB line protocol on the admin (runtime: not yet)."""

    kind: str = key("kind", as_str, "io.l5d.influxdb", always_emit=True)


TELEMETER_KINDS = KindFamily(
    "telemeter kind",
    {
        "io.l5d.prometheus": PrometheusTelemeterConfig,
        "io.l5d.recentRequests": RecentRequestsTelemeterConfig,
        "io.l5d.zipkin": ZipkinTelemeterConfig,
        "io.l5d.statsd": StatsdTelemeterConfig,
        "io.l5d.tracelog": TracelogTelemeterConfig,
        "io.l5d.influxdb": InfluxDbTelemeterConfig,
    },
    unsupported=frozenset({"io.zipkin.http", "io.zipkin.kafka", "io.l5d.adminMetricsExport"}),
    experimental=frozenset({"io.l5d.statsd"}),
)


@dataclass(frozen=True, kw_only=True)
class UsageConfig(ConfigNode):
    """``usage``: linkerd's anonymous usage reporting. Accepted; fastmesh never sends it."""

    org_id: str | None = key("orgId", as_str, None)
    enabled: bool = key("enabled", as_bool, True)
