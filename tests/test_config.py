"""fastmesh.config: linkerd 1.x configs load into typed config, bad ones fail by YAML path.

The good configs are the linkerd-examples DaemonSet configs (copied into tests/data, and
re-extracted from ../shared when present) plus our own samples; the broken ones live in
tests/data/configs/broken/, each starting with the error it must raise:
``# expect: <exact message>`` or ``# expect-prefix: <start of the message>``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from fastmesh.config import (ClientConfig, Config, ConfigError, ConsecutiveFailuresConfig,
                             ConstantBackoffConfig, DaemonSetTransformerConfig,
                             EwmaLoadBalancerConfig, FsNamerConfig, HeaderTokenIdentifierConfig,
                             JitteredBackoffConfig, K8sNamerConfig, LocalNodeTransformerConfig,
                             MethodAndHostIdentifierConfig, P2cLoadBalancerConfig,
                             PathIdentifierConfig, PrometheusTelemeterConfig,
                             RecentRequestsTelemeterConfig, StaticIdentifierConfig,
                             StatsdTelemeterConfig, SuccessRateConfig, ZipkinTelemeterConfig,
                             load_config)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "configs"
BROKEN = DATA / "broken"
SHARED_EXAMPLES = REPO.parent / "shared" / "linkerd-examples"

EXAMPLE_DTAB_SHOWN = ("/srv=>/#/io.l5d.k8s/default/http;/host=>/srv;/svc=>/host;"
                      "/host/world=>/srv/world-v1")
GOOD_CONFIGS = ["linkerd-example.yaml", "linkerd-tls-example.yaml", "static-client.yaml",
                "full.json"]


def load_text(text: str) -> Config:
    return load_config("test.yaml", text=textwrap.dedent(text))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return str(info.value)


# --- the reference linkerd configs -------------------------------------------------------


@pytest.mark.parametrize("name,tls", [("linkerd-example.yaml", False),
                                      ("linkerd-tls-example.yaml", True)])
def test_linkerd_daemonset_example_loads(name: str, tls: bool) -> None:
    config = load_config(DATA / name)

    assert (config.admin.ip, config.admin.port) == ("0.0.0.0", 9990)
    [namer] = config.namers
    assert isinstance(namer, K8sNamerConfig)
    assert (namer.host, namer.port, str(namer.prefix)) == ("localhost", 8001, "/io.l5d.k8s")
    prometheus, recent = config.telemetry
    assert isinstance(prometheus, PrometheusTelemeterConfig)
    assert prometheus.path == "/admin/metrics/prometheus"
    assert isinstance(recent, RecentRequestsTelemeterConfig)
    assert (recent.sample_rate, recent.capacity) == (0.25, 10)
    assert config.usage is not None and config.usage.org_id.startswith("linkerd-examples-daemonset")

    outgoing, incoming = config.routers
    assert [outgoing.label, incoming.label] == ["outgoing", "incoming"]
    assert config.router("incoming") is incoming
    for router, port in ((outgoing, 4140), (incoming, 4141)):
        assert router.protocol == "http"
        [server] = router.servers
        assert (server.ip, server.port) == ("0.0.0.0", port)
        assert str(router.dtab.parsed) == EXAMPLE_DTAB_SHOWN
        assert "/host/world => /srv/world-v1;" in router.dtab.text  # as written
        assert str(router.dst_prefix) == "/svc"
        assert router.identifier == (HeaderTokenIdentifierConfig(header="Host"),)
        assert router.interpreter.kind == "default"

    [daemonset] = outgoing.interpreter.transformers
    assert isinstance(daemonset, DaemonSetTransformerConfig)
    assert (daemonset.namespace, daemonset.port, daemonset.service) == ("default", "incoming", "l5d")
    assert (daemonset.k8s_host, daemonset.k8s_port, daemonset.host_network) == ("localhost", 8001, False)
    assert str(daemonset.prefix) == "/io.l5d.k8s.daemonset/default/incoming/l5d"
    [localnode] = incoming.interpreter.transformers
    assert isinstance(localnode, LocalNodeTransformerConfig)
    assert str(localnode.prefix) == "/io.l5d.k8s.localnode"

    assert outgoing.service.params_for("/svc/world").response_classifier.kind == \
        "io.l5d.http.retryableRead5XX"
    assert incoming.service.params_for("/svc/world").response_classifier.kind == \
        "io.l5d.http.nonRetryable5XX"

    client_tls = outgoing.client.params_for("/%/io.l5d.k8s.daemonset/default/incoming/l5d"
                                            "/#/io.l5d.k8s/default/http/world-v1").tls
    server_tls = incoming.servers[0].tls
    if tls:
        assert client_tls is not None
        assert client_tls.common_name == "linkerd"
        assert client_tls.trust_certs == ("/io.buoyant/linkerd/certs/cacertificate.pem",)
        assert client_tls.enabled and not client_tls.disable_validation
        assert server_tls is not None
        assert server_tls.cert_path == "/io.buoyant/linkerd/certs/certificate.pem"
        assert server_tls.key_path == "/io.buoyant/linkerd/certs/key.pk8"
        assert not server_tls.require_client_auth
        assert any("trustCerts is deprecated" in w for w in config.warnings)
    else:
        assert client_tls is None and server_tls is None
        assert config.warnings == ()
    assert incoming.client.params_for("/anything").tls is None


def _l5d_config_yaml(manifest: Path) -> str | None:
    for doc in yaml.safe_load_all(manifest.read_text()):
        if (isinstance(doc, dict) and doc.get("kind") == "ConfigMap"
                and doc.get("metadata", {}).get("name") == "l5d-config"):
            return doc["data"]["config.yaml"]
    return None


def test_shared_linkerd_examples_load_unchanged() -> None:
    """Every l5d-config in ../shared/linkerd-examples loads, and equals our copy of it."""
    if not SHARED_EXAMPLES.is_dir():
        pytest.skip(f"{SHARED_EXAMPLES} is not present")
    copies = {"linkerd.yml": "linkerd-example.yaml", "linkerd-tls.yml": "linkerd-tls-example.yaml"}
    loaded = 0
    for manifest in sorted(SHARED_EXAMPLES.glob("*.yml")):
        text = _l5d_config_yaml(manifest)
        if text is None:
            continue
        config = load_config(str(manifest), text=text)
        assert [r.label for r in config.routers] == ["outgoing", "incoming"]
        if manifest.name in copies:
            assert config == load_config(DATA / copies[manifest.name])
        loaded += 1
    assert loaded >= 2, "expected linkerd.yml and linkerd-tls.yml to hold an l5d-config"


# --- defaults and typed values -----------------------------------------------------------------


def test_defaults_are_the_spec_tables() -> None:
    config = load_text("""
        routers:
        - protocol: http
          servers:
          - {}
    """)
    admin = config.admin
    assert (admin.ip, admin.port, admin.shutdown_grace_ms, admin.tls) == ("127.0.0.1", 9990, 10000, None)
    assert admin.security.ui_enabled and admin.security.control_enabled
    assert (config.namers, config.telemetry, config.usage) == ((), (), None)

    [router] = config.routers
    assert router.label == "http"
    assert str(router.dtab.parsed) == "" and router.dtab.text == ""
    assert str(router.dst_prefix) == "/svc"
    assert router.identifier == (HeaderTokenIdentifierConfig(),)
    assert router.identifier[0].header == "Host"
    assert (router.interpreter.kind, router.interpreter.transformers) == ("default", ())
    assert router.binding_timeout_ms == 10000
    bc = router.binding_cache
    assert (bc.paths, bc.trees, bc.bounds, bc.clients, bc.idle_ttl_secs) == (1000, 1000, 1000, 1000, 600)
    assert router.originator is False
    assert (router.max_headers_kb, router.max_initial_line_kb, router.max_err_response_kb) == (8, 4, 5120)
    assert (router.streaming_enabled, router.stream_after_content_length_kb) == (True, 5)
    assert router.compression_level == -1
    assert (router.http_access_log, router.http_access_log_roll_policy,
            router.http_access_log_append, router.http_access_log_rotate_count) == (None, "never", True, -1)
    assert router.trace_propagator.kind == "io.l5d.default"

    [server] = router.servers
    assert (server.ip, server.port, server.tls) == ("127.0.0.1", 4140, None)
    assert (server.clear_context, server.max_call_depth, server.max_concurrent_requests) == (False, 1000, None)
    assert server.add_forwarded_header is None and server.timestamp_header is None
    assert router.server_labels == ("http",)

    assert router.client.kind == "io.l5d.global"
    params = router.client.params_for("/$/inet/127.1/8080")
    assert params.tls is None
    assert params.load_balancer == P2cLoadBalancerConfig(max_effort=5, enable_probation=False)
    assert params.failure_accrual == ConsecutiveFailuresConfig(failures=5, backoff=None)
    budget = params.requeue_budget
    assert (budget.ttl_secs, budget.min_retries_per_sec, budget.percent_can_retry) == (10, 10, 0.2)
    assert (params.request_attempt_timeout_ms, params.fail_fast, params.forward_client_cert) == (None, False, False)
    pool = params.host_connection_pool
    assert (pool.min_size, pool.max_size, pool.idle_time_ms, pool.max_waiters) == (0, None, None, None)

    service = router.service.params_for("/svc/world")
    assert router.service.kind == "io.l5d.global"
    assert service.response_classifier.kind == "io.l5d.http.nonRetryable5XX"
    assert service.retries.backoff == ConstantBackoffConfig(ms=0)
    assert service.retries.budget == budget
    assert service.total_timeout_ms is None


def test_full_json_config_is_typed() -> None:
    config = load_config(DATA / "full.json")
    assert (config.admin.port, config.admin.shutdown_grace_ms) == (9992, 2000)
    security = config.admin.security
    assert not security.control_enabled
    assert security.allows("/admin/shutdown", category_enabled=False)
    assert not security.allows("/logging.json", category_enabled=False)

    [namer] = config.namers
    assert isinstance(namer, K8sNamerConfig)
    assert (str(namer.prefix), namer.port, namer.label_selector) == ("/k8s", 8002, "version")
    prometheus, zipkin = config.telemetry
    assert (prometheus.path, prometheus.prefix) == ("/metrics", "fastmesh_")
    assert isinstance(zipkin, ZipkinTelemeterConfig)
    assert (zipkin.host, zipkin.port, zipkin.sample_rate) == ("localhost", 9410, 1.0)
    assert config.usage is not None and config.usage.enabled is False

    [router] = config.routers
    assert str(router.dst_prefix) == "/http"
    method_and_host, path_id, static_id = router.identifier
    assert isinstance(method_and_host, MethodAndHostIdentifierConfig) and method_and_host.http_uri_in_dst
    assert isinstance(path_id, PathIdentifierConfig) and (path_id.segments, path_id.consume) == (2, True)
    assert isinstance(static_id, StaticIdentifierConfig) and str(static_id.path) == "/fallback"
    assert str(router.dtab.parsed) == "/http/*/*=>/$/inet/127.1/8080"
    assert (router.max_headers_kb, router.streaming_enabled, router.compression_level) == (16, False, 0)
    assert router.trace_propagator.kind == "io.l5d.zipkin"
    assert (router.binding_timeout_ms, router.binding_cache.paths, router.binding_cache.trees) == (3000, 10, 1000)
    assert router.originator is True

    [server] = router.servers
    assert (server.clear_context, server.max_call_depth, server.timestamp_header) == (True, 5, "x-ts")
    assert server.add_forwarded_header is not None
    assert server.add_forwarded_header.by.kind == "static"
    assert server.add_forwarded_header.by.label == "edge"
    assert server.add_forwarded_header.for_.kind == "ip:port"
    assert server.socket_options is not None
    assert (server.socket_options.reuse_port, server.socket_options.backlog,
            server.socket_options.no_delay) == (True, 512, True)

    params = router.client.params_for("/$/inet/127.1/8080")
    accrual = params.failure_accrual
    assert isinstance(accrual, SuccessRateConfig)
    assert (accrual.success_rate, accrual.requests) == (0.9, 20)
    assert accrual.backoff == ConstantBackoffConfig(ms=1000)
    assert (params.host_connection_pool.min_size, params.host_connection_pool.max_size) == (1, 50)
    assert params.requeue_budget.percent_can_retry == 0.5
    assert params.requeue_budget.ttl_secs == 10  # the rest of the budget keeps its defaults
    assert params.fail_fast and params.forward_client_cert

    service = router.service.params_for("/http/1.1/GET/x")
    assert service.total_timeout_ms == 2500
    assert service.retries.backoff == JitteredBackoffConfig(min_ms=5, max_ms=50)


def test_json_and_yaml_give_the_same_config() -> None:
    text = (DATA / "linkerd-tls-example.yaml").read_text()
    as_json = json.dumps(yaml.safe_load(text), indent=2)
    assert as_json.lstrip().startswith("{")
    assert load_config("x.json", text=as_json) == load_config("x.yaml", text=text)


def test_env_variables_are_not_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    config = load_text("""
        routers:
        - protocol: http
          servers: [{port: 4140}]
          client:
            tls: {commonName: $NODE_NAME, trustCertsBundle: "${HOME}/ca.pem"}
    """)
    tls = config.routers[0].client.params_for("/x").tls
    assert (tls.common_name, tls.trust_certs_bundle) == ("$NODE_NAME", "${HOME}/ca.pem")


def test_scalars_coerce_like_jackson_and_null_means_absent() -> None:
    config = load_text("""
        admin: {port: "9995"}
        routers:
        - protocol: http
          label:
          servers:
          - port: "4150"
            clearContext: "true"
          client:
            tls: {commonName: 1234}
    """)
    assert config.admin.port == 9995
    [router] = config.routers
    assert router.label == "http"  # `label:` with no value is the default, as a null Option
    assert (router.servers[0].port, router.servers[0].clear_context) == (4150, True)
    assert router.client.params.tls.common_name == "1234"


def test_yaml_keys_stay_field_names() -> None:
    # YAML 1.1 would read `on` as a boolean; Jackson reads every key as a field name.
    assert error_of("""
        routers:
        - protocol: http
          servers: [{port: 4140}]
          on: true
    """).startswith("routers[0].on: unknown key 'on' (known: protocol, label, dtab,")


def test_server_tls_enabled_true_is_accepted() -> None:
    config = load_text("""
        routers:
        - protocol: http
          servers:
          - port: 4141
            tls: {certPath: /c.pem, keyPath: /k.pk8, enabled: true, requireClientAuth: true,
                  caCertPath: /ca.pem, protocols: [TLSv1.2]}
    """)
    tls = config.routers[0].servers[0].tls
    assert (tls.require_client_auth, tls.ca_cert_path, tls.protocols) == (True, "/ca.pem", ("TLSv1.2",))


def test_experimental_telemeter_loads_when_enabled() -> None:
    config = load_text("""
        telemetry:
        - kind: io.l5d.statsd
          experimental: true
        routers:
        - protocol: http
          servers: [{port: 4140}]
    """)
    [statsd] = config.telemetry
    assert isinstance(statsd, StatsdTelemeterConfig)
    assert (statsd.prefix, statsd.hostname, statsd.port, statsd.gauge_interval_ms,
            statsd.sample_rate) == ("linkerd", "127.0.0.1", 8125, 10000, 0.01)


def test_port_zero_servers_do_not_conflict() -> None:
    # Port 0 is "any free port": tests and the demo run several such servers side by side.
    config = load_text("""
        admin: {port: 0}
        routers:
        - {protocol: http, label: a, servers: [{port: 0}, {port: 0}]}
        - {protocol: http, label: b, servers: [{port: 0}]}
    """)
    assert [len(r.servers) for r in config.routers] == [2, 1]


def test_short_ipv4_forms_conflict_with_their_long_form() -> None:
    assert error_of("""
        routers:
        - protocol: http
          servers: [{ip: 127.0.0.1, port: 4140}, {ip: 127.1, port: 4140}]
    """) == "routers[0].servers[1]: conflicting port 127.1:4140 (also used by routers[0].servers[0])"


def test_fs_namer_and_namer_prefix() -> None:
    config = load_config(DATA / "static-client.yaml")
    [namer] = config.namers
    assert isinstance(namer, FsNamerConfig)
    assert (namer.root_dir, str(namer.prefix)) == ("/etc/fastmesh/disco", "/io.l5d.fs")


# --- broken configs --------------------------------------------------------------------------


def _broken_cases() -> list[pytest.param]:
    cases = []
    for file in sorted(BROKEN.glob("*.yaml")):
        first = file.read_text().splitlines()[0]
        marker, _, expected = first.partition(": ")
        assert marker in ("# expect", "# expect-prefix"), f"{file.name} lacks an expect line"
        cases.append(pytest.param(file, marker == "# expect-prefix", expected, id=file.stem))
    return cases


@pytest.mark.parametrize("file,prefix_only,expected", _broken_cases())
def test_broken_config_fails_with_path_and_reason(file: Path, prefix_only: bool, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    if prefix_only:
        assert message.startswith(expected), message
        assert len(message) > len(expected), "the parser's own reason should follow"
    else:
        assert message == expected
    if info.value.path:  # str(err) is "<path>: <reason>"
        assert message == f"{info.value.path}: {info.value.reason}"
    else:
        assert message == info.value.reason


def test_broken_case_table_covers_the_brief() -> None:
    names = {p.id for p in _broken_cases()}
    for required in ("unknown-key-top", "unknown-key-server", "unknown-key-client-tls",
                     "unknown-key-transformer", "duplicate-key", "conflicting-label",
                     "conflicting-port", "bad-port", "bad-dtab", "tls-without-common-name",
                     "sample-rate-high", "unknown-namer", "unknown-transformer",
                     "missing-routers", "wrong-type-port", "unsupported-protocol",
                     "tls-trust-certs-and-bundle", "experimental-statsd"):
        assert required in names


@pytest.mark.parametrize("text,expected", [
    pytest.param('{"routers": [{"protocol": "http", "label": "a", "servers": [{"port": 4140}],'
                 ' "label": "b"}]}',
                 "routers[0].label: duplicate key 'label'", id="router-key"),
    pytest.param('{"routers": [], "admin": {"port": 9990}, "routers": []}',
                 "routers: duplicate key 'routers'", id="top-level"),
    pytest.param('{"routers": [{"protocol": "http", "servers": [{"port": 4140,'
                 ' "tls": {"certPath": "/c", "keyPath": "/k", "certPath": "/d"}}]}]}',
                 "routers[0].servers[0].tls.certPath: duplicate key 'certPath'", id="deep"),
    pytest.param('{"routers": [{"protocol": "http", "servers": [{"port": 4140}], "dtab": 5,}]}',
                 None, id="bad-json"),
])
def test_broken_json(text: str, expected: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("config.json", text=text)
    if expected is None:
        assert str(info.value).startswith("invalid JSON: ")
    else:
        assert str(info.value) == expected


def test_non_mapping_document() -> None:
    with pytest.raises(ConfigError, match="the config must be a mapping of sections, got list"):
        load_config("c.yaml", text="- routers\n")


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config("c.yaml", text="routers: &r\n- protocol: http\n  servers: *r\n")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*no-such.yaml"):
        load_config(DATA / "no-such.yaml")


# --- static client and service configs ---------------------------------------------------------


def test_static_client_prefix_matching_and_substitution() -> None:
    client = load_config(DATA / "static-client.yaml").routers[0].client
    assert client.kind == "io.l5d.static"

    world = client.params_for("/#/io.l5d.fs/world")
    assert world.tls is not None
    assert world.tls.common_name == "world.mesh.local"  # {service} captured, substituted
    assert world.tls.trust_certs_bundle == "/etc/fastmesh/ca.pem"
    assert world.request_attempt_timeout_ms == 1000  # from the "/" entry
    assert world.load_balancer == EwmaLoadBalancerConfig(decay_time_ms=5000)

    # `*` matches one segment; the later entry overrides the timeout, the tls stays.
    admin = client.params_for("/#/io.l5d.fs/users/admin")
    assert admin.request_attempt_timeout_ms == 250
    assert admin.tls.common_name == "users.mesh.local"
    assert client.params_for("/#/io.l5d.fs/users/api").request_attempt_timeout_ms == 1000

    inet = client.params_for("/$/inet/127.1/8080")
    assert inet.tls.common_name == "127.1"
    assert inet.tls.trust_certs_bundle is None

    # Prefixes are anchored at the start: a transformer-prefixed id is another name.
    local = client.params_for("/%/io.l5d.k8s.localnode/10.0.0.1/#/io.l5d.fs/world")
    assert local.tls is None and local.request_attempt_timeout_ms == 1000
    # A pattern longer than the name does not match.
    assert client.params_for("/#/io.l5d.fs").tls is None
    # The stored config is not changed by resolution.
    assert client.configs[1].params.tls.common_name == "{service}.mesh.local"


def test_static_client_later_entries_override_earlier_ones() -> None:
    client = load_text("""
        routers:
        - protocol: http
          servers: [{port: 4140}]
          client:
            kind: io.l5d.static
            configs:
            - prefix: /$/inet/*/{port}
              failFast: true
              tls: {commonName: "port-{port}"}
            - prefix: /$/inet/{host}
              tls: {commonName: "{host}", trustCertsBundle: /ca.pem}
            - prefix: /$/inet/10.0.0.9
              tls: {disableValidation: true}
    """).routers[0].client
    a = client.params_for("/$/inet/10.0.0.1/80")
    assert (a.fail_fast, a.tls.common_name, a.tls.trust_certs_bundle) == (True, "10.0.0.1", "/ca.pem")
    b = client.params_for("/$/inet/10.0.0.9/80")
    assert b.fail_fast and b.tls.disable_validation and b.tls.common_name is None
    c = client.params_for("/$/inet/10.0.0.1")  # too short for the first pattern
    assert (c.fail_fast, c.tls.common_name) == (False, "10.0.0.1")
    d = client.params_for("/#/io.l5d.k8s/default/http/world")
    assert d == ClientConfig().params_for("/anything")  # nothing matched: all defaults


def test_static_prefix_host_port_capture() -> None:
    client = load_text("""
        routers:
        - protocol: http
          servers: [{port: 4140}]
          client:
            kind: io.l5d.static
            configs:
            - prefix: /svc/{name}:8080
              tls: {commonName: "{name}.internal"}
    """).routers[0].client
    assert client.params_for("/svc/world:8080").tls.common_name == "world.internal"
    assert client.params_for("/svc/world:9090").tls is None
    assert client.params_for("/svc/world").tls is None


def test_global_client_params_apply_to_every_client() -> None:
    client = load_config(DATA / "linkerd-tls-example.yaml").routers[0].client
    assert client.params_for("/$/inet/1.2.3.4/80") is client.params_for("/#/x")


def test_static_service_matching() -> None:
    service = load_config(DATA / "static-client.yaml").routers[0].service
    payments = service.params_for("/svc/payments")
    assert payments.response_classifier.kind == "io.l5d.http.nonRetryable5XX"
    assert payments.total_timeout_ms == 5000  # inherited from the /svc entry
    budget = payments.retries.budget
    assert (budget.ttl_secs, budget.min_retries_per_sec, budget.percent_can_retry) == (20, 1, 0.1)
    assert payments.retries.backoff == JitteredBackoffConfig(min_ms=10, max_ms=100)

    world = service.params_for("/svc/world")
    assert world.response_classifier.kind == "io.l5d.http.retryableRead5XX"
    assert world.response_classifier.is_retryable_method("get")
    assert not world.response_classifier.is_retryable_method("POST")
    assert world.retries.backoff == ConstantBackoffConfig(ms=0)

    other = service.params_for("/other/thing")
    assert other.total_timeout_ms is None
    assert other.response_classifier.kind == "io.l5d.http.nonRetryable5XX"


# --- /config.json ----------------------------------------------------------------------------


def test_to_json_is_linkerds_config_json_shape() -> None:
    shown = load_config(DATA / "linkerd-tls-example.yaml").to_json()
    assert json.loads(json.dumps(shown)) == shown
    assert shown["admin"] == {"ip": "0.0.0.0", "port": 9990}
    outgoing, incoming = shown["routers"]
    assert incoming["client"] == {"kind": "io.l5d.global"}  # filled in though absent
    assert outgoing["client"] == {"kind": "io.l5d.global", "tls": {
        "commonName": "linkerd", "trustCerts": ["/io.buoyant/linkerd/certs/cacertificate.pem"]}}
    assert outgoing["dtab"] == EXAMPLE_DTAB_SHOWN  # re-serialised from the parsed dtab
    for absent in ("dstPrefix", "identifier", "bindingTimeoutMs", "maxHeadersKB"):
        assert absent not in outgoing
    assert "service" not in incoming
    assert incoming["servers"] == [{"ip": "0.0.0.0", "port": 4141, "tls": {
        "certPath": "/io.buoyant/linkerd/certs/certificate.pem",
        "keyPath": "/io.buoyant/linkerd/certs/key.pk8"}}]
    assert outgoing["interpreter"]["transformers"] == [
        {"kind": "io.l5d.k8s.daemonset", "namespace": "default", "service": "l5d", "port": "incoming"}]
    assert shown["telemetry"] == [{"kind": "io.l5d.prometheus"},
                                  {"kind": "io.l5d.recentRequests", "sampleRate": 0.25}]


@pytest.mark.parametrize("name", GOOD_CONFIGS)
def test_to_json_round_trips(name: str) -> None:
    config = load_config(DATA / name)
    again = load_config("config.json", text=json.dumps(config.to_json()))
    assert again == config
    assert again.to_json() == config.to_json()


# --- `fastmesh check` through a real process --------------------------------------------------


def _check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastmesh.config", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_check_accepts_the_tls_example() -> None:
    result = _check(str(DATA / "linkerd-tls-example.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: 2 routers (outgoing, incoming), 1 namers\n"
    assert "warning: routers[0].client.tls.trustCerts: trustCerts is deprecated" in result.stderr


def test_check_reports_the_yaml_path_and_exits_1() -> None:
    result = _check(str(BROKEN / "bad-port.yaml"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "routers[0].servers[1].port: port must be 0..65535, got 70000\n"


def test_check_reads_stdin_and_unreadable_files() -> None:
    ok = _check("-", stdin=(DATA / "static-client.yaml").read_text())
    assert (ok.returncode, ok.stdout) == (0, "ok: 1 routers (out), 1 namers\n")
    missing = _check(str(DATA / "does-not-exist.yaml"))
    assert missing.returncode == 1
    assert "cannot read config file" in missing.stderr
    usage = _check()
    assert usage.returncode == 2 and "CONFIG" in usage.stderr


def test_check_does_not_bind_the_configured_ports() -> None:
    """With every configured port already taken, check still passes: it binds nothing."""
    held = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            held.append(s)
        admin, outgoing, incoming = (s.getsockname()[1] for s in held)
        config = textwrap.dedent(f"""
            admin: {{ip: 127.0.0.1, port: {admin}}}
            routers:
            - {{protocol: http, label: outgoing, servers: [{{ip: 127.0.0.1, port: {outgoing}}}]}}
            - {{protocol: http, label: incoming, servers: [{{ip: 127.0.0.1, port: {incoming}}}]}}
        """)
        result = subprocess.run(
            [sys.executable, "-c",
             "import sys; from fastmesh.config import main_check; sys.exit(main_check(['-']))"],
            input=config, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "ok: 2 routers (outgoing, incoming), 0 namers\n"
    finally:
        for s in held:
            s.close()


def test_check_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fastmesh.config import main_check

    bad = tmp_path / "bad.yaml"
    bad.write_text("routers:\n- protocol: http\n  servers: [{port: 4140}]\n  dtab: /a => /b/\n")
    assert main_check([str(bad)]) == 1
    assert capsys.readouterr().err.startswith("routers[0].dtab: invalid dtab: ")
    good = tmp_path / "good.yaml"
    good.write_text("routers:\n- protocol: http\n  servers: [{port: 4140}]\n")
    assert main_check([str(good)]) == 0
    assert capsys.readouterr().out == "ok: 1 routers (http), 0 namers\n"
