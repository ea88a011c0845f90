"""linkerd 1.x config → typed, validated fastmesh config; errors name the bad YAML key.

This is where a swapped-in fastmesh first meets the ConfigMap an existing linkerd
DaemonSet used: :func:`load_config` reads it (YAML, or JSON), rejects anything linkerd
would reject (unknown or duplicate keys, bad ports, unparseable dtabs, TLS without
``commonName``, conflicting labels or ports, ...) with ``<yaml path>: <reason>``, and
returns frozen dataclasses that the router, namers, TLS and admin modules read at start.
Nothing here binds, connects or resolves.

Modules: ``source`` (text → data), ``schema`` (key tables → dataclasses), one module per
section (``admin``, ``routers``, ``servers``, ``client``, ``service``, ``policy``,
``namers``, ``telemetry``), ``root`` (the document and cross-section checks), ``check``
(``fastmesh check``).
"""

from .admin import AdminConfig, AdminSecurityConfig
from .check import EXIT_INVALID, EXIT_OK, add_check_arguments, main_check, run_check
from .client import (ClientAuthConfig, ClientConfig, ClientParams, ClientSessionConfig,
                     ClientTlsConfig, HostConnectionPoolConfig, StaticClientEntry)
from .errors import ConfigError
from .matcher import PathMatcher
from .namers import (ConstTransformerConfig, DaemonSetTransformerConfig, FsNamerConfig,
                     InterpreterConfig, K8sNamerConfig, LocalhostTransformerConfig,
                     LocalNodeTransformerConfig, NamerConfig, PortTransformerConfig,
                     ReplaceTransformerConfig, SpecificHostTransformerConfig, TransformerConfig)
from .policy import (ApertureLoadBalancerConfig, BackoffConfig, ConsecutiveFailuresConfig,
                     ConstantBackoffConfig, EwmaLoadBalancerConfig, FailureAccrualConfig,
                     HeapLoadBalancerConfig, JitteredBackoffConfig, LoadBalancerConfig,
                     NoFailureAccrualConfig, P2cLoadBalancerConfig, RetryBudgetConfig,
                     RoundRobinLoadBalancerConfig, SuccessRateConfig, SuccessRateWindowedConfig)
from .root import Config, load_config
from .routers import (BindingCacheConfig, DtabConfig, HeaderIdentifierConfig,
                      HeaderTokenIdentifierConfig, IdentifierConfig, MethodAndHostIdentifierConfig,
                      PathIdentifierConfig, RouterConfig, StaticIdentifierConfig,
                      TracePropagatorConfig)
from .servers import (ForwardedHeaderConfig, LabelerConfig, ServerConfig, ServerSessionConfig,
                      ServerTlsConfig, SocketOptionsConfig, StaticLabelerConfig)
from .service import (ResponseClassifierConfig, RetriesConfig, ServiceConfig, ServiceParams,
                      StaticServiceEntry)
from .telemetry import (InfluxDbTelemeterConfig, PrometheusTelemeterConfig,
                        RecentRequestsTelemeterConfig, StatsdTelemeterConfig, TelemeterConfig,
                        TracelogTelemeterConfig, UsageConfig, ZipkinTelemeterConfig)

__all__ = [
    # loading and checking
    "load_config", "ConfigError", "Config",
    "add_check_arguments", "run_check", "main_check", "EXIT_OK", "EXIT_INVALID",
    # sections
    "AdminConfig", "AdminSecurityConfig",
    "RouterConfig", "DtabConfig", "BindingCacheConfig", "TracePropagatorConfig",
    "IdentifierConfig", "HeaderTokenIdentifierConfig", "HeaderIdentifierConfig",
    "MethodAndHostIdentifierConfig", "PathIdentifierConfig", "StaticIdentifierConfig",
    "ServerConfig", "ServerTlsConfig", "SocketOptionsConfig", "ServerSessionConfig",
    "ForwardedHeaderConfig", "LabelerConfig", "StaticLabelerConfig",
    "ClientConfig", "ClientParams", "StaticClientEntry", "ClientTlsConfig", "ClientAuthConfig",
    "HostConnectionPoolConfig", "ClientSessionConfig",
    "ServiceConfig", "ServiceParams", "StaticServiceEntry", "ResponseClassifierConfig",
    "RetriesConfig",
    "LoadBalancerConfig", "P2cLoadBalancerConfig", "EwmaLoadBalancerConfig",
    "ApertureLoadBalancerConfig", "HeapLoadBalancerConfig", "RoundRobinLoadBalancerConfig",
    "FailureAccrualConfig", "ConsecutiveFailuresConfig", "SuccessRateConfig",
    "SuccessRateWindowedConfig", "NoFailureAccrualConfig",
    "BackoffConfig", "ConstantBackoffConfig", "JitteredBackoffConfig", "RetryBudgetConfig",
    "NamerConfig", "K8sNamerConfig", "FsNamerConfig", "InterpreterConfig",
    "TransformerConfig", "DaemonSetTransformerConfig", "LocalNodeTransformerConfig",
    "LocalhostTransformerConfig", "SpecificHostTransformerConfig", "PortTransformerConfig",
    "ReplaceTransformerConfig", "ConstTransformerConfig",
    "TelemeterConfig", "PrometheusTelemeterConfig", "RecentRequestsTelemeterConfig",
    "ZipkinTelemeterConfig", "StatsdTelemeterConfig", "TracelogTelemeterConfig",
    "InfluxDbTelemeterConfig", "UsageConfig",
    "PathMatcher",
]
