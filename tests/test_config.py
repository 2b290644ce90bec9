"""``ObservabilityConfig``: defaults, environment parsing, errors that name the variable, redaction."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from litestar_omnii_obs import ConfigError, LatencyConfig, ObservabilityConfig, SentryConfig, TracingConfig

DSN = "https://abcdef0123456789@o1.ingest.example.invalid/42"


def test_defaults_without_any_variable() -> None:
    config = ObservabilityConfig.from_env({})
    assert config == ObservabilityConfig()
    # OpenTelemetry's default service name and no invented version (sentry-sdk then picks its own release).
    assert (config.environment, config.version, config.service_name) == ("development", None, "unknown_service")
    assert config.latency.exclude_paths == ("/health",)
    assert config.metrics.sink == "stdout"
    assert config.sentry.dsn is None
    assert config.tracing.otlp_endpoint is None
    assert config.sentry_traces_sample_rate == 1.0


def test_every_variable_is_read() -> None:
    config = ObservabilityConfig.from_env(
        {
            "APP_ENV": "production",
            "APP_VERSION": "2.3.4",
            "SENTRY_DSN": DSN,
            "SENTRY_ENVIRONMENT": "prod-eu",
            "SENTRY_RELEASE": "api@2.3.4",
            "OTEL_SERVICE_NAME": "billing",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:4317",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t,x-tenant=acme",
            "OMNII_OBS_EXCLUDE_PATHS": "/health, /internal/*",
            "OMNII_OBS_METRICS_SINK": "stderr",
            "OMNII_OBS_METRICS_MAX_QUEUE": "50",
            "OMNII_OBS_METRICS_FLUSH_INTERVAL": "0.5",
            "OMNII_OBS_LATENCY": "false",
            "OMNII_OBS_OPT_KEY": "obs",
            "OMNII_OBS_UNMATCHED_ROUTE": "NO_ROUTE",
            "OMNII_OBS_SENTRY_IGNORE_ERRORS": "KeyError,asyncio.CancelledError",
            "OMNII_OBS_SENTRY_CAPTURE_STATUS": "500,502-504",
            "OMNII_OBS_SENTRY_SCRUB_KEYS": "X-Internal, ssn",
            "OMNII_OBS_SENTRY_SEND_PII": "yes",
            "OMNII_OBS_SENTRY_FLUSH_TIMEOUT": "1.5",
            "OMNII_OBS_TRACING": "off",
            "OMNII_OBS_TRACES_CONSOLE": "1",
            "OMNII_OBS_SHUTDOWN_TIMEOUT": "3",
        }
    )
    assert (config.environment, config.version, config.service_name) == ("production", "2.3.4", "billing")
    assert config.sentry_traces_sample_rate == 0.1
    assert config.sentry.dsn == DSN
    assert (config.sentry.environment, config.sentry.release) == ("prod-eu", "api@2.3.4")
    assert config.sentry.ignore_errors == ("KeyError", "asyncio.CancelledError")
    assert config.sentry.capture_status_codes == frozenset({500, 502, 503, 504})
    assert config.sentry.scrub_keys == ("x-internal", "ssn")
    assert (config.sentry.send_default_pii, config.sentry.flush_timeout) == (True, 1.5)
    assert config.tracing.otlp_endpoint == "http://collector:4317"
    assert config.tracing.otlp_metrics_endpoint == "http://metrics:4317"
    assert config.tracing.otlp_headers == (("api-key", "s3cr3t"), ("x-tenant", "acme"))
    assert (config.tracing.enabled, config.tracing.console, config.tracing.shutdown_timeout) == (False, True, 3.0)
    assert config.latency.exclude_paths == ("/health", "/internal/*")
    assert (config.latency.enabled, config.latency.opt_key, config.latency.unmatched_route) == (
        False,
        "obs",
        "NO_ROUTE",
    )
    assert (config.metrics.sink, config.metrics.max_queue, config.metrics.flush_interval) == ("stderr", 50, 0.5)


def test_traces_specific_endpoint_wins_over_generic_one() -> None:
    config = ObservabilityConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317"}
    )
    assert config.tracing.traces_endpoint == "http://b:4317"
    assert config.tracing.otlp_endpoint == "http://a:4317"


@pytest.mark.parametrize(
    ("rate", "env", "expected"),
    [("", "production", 0.1), ("", "staging", 1.0), ("0.25", "production", 0.25), ("0", "development", 0.0)],
)
def test_sentry_traces_sample_rate(rate: str, env: str, expected: float) -> None:
    config = ObservabilityConfig.from_env({"SENTRY_TRACES_SAMPLE_RATE": rate, "APP_ENV": env})
    assert config.sentry_traces_sample_rate == expected


BAD_VALUES = [
    ("APP_ENV", "prod uction", "without spaces"),
    ("APP_VERSION", "1.0\n", "printable"),
    ("SENTRY_DSN", "not-a-dsn", "Sentry DSN"),
    ("SENTRY_DSN", "ftp://key@host/1", "Sentry DSN"),
    ("SENTRY_DSN", "https://host/1", "Sentry DSN"),
    ("SENTRY_ENVIRONMENT", " ", "non-blank"),
    ("SENTRY_TRACES_SAMPLE_RATE", "1.5", "[0.0, 1.0]"),
    ("SENTRY_TRACES_SAMPLE_RATE", "-0.1", "[0.0, 1.0]"),
    ("SENTRY_TRACES_SAMPLE_RATE", "abc", "[0.0, 1.0]"),
    ("SENTRY_TRACES_SAMPLE_RATE", "nan", "[0.0, 1.0]"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "URL"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://host:99999", "URL"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign", "key=value"),
    ("OTEL_TRACES_SAMPLER", "sometimes", "traceidratio"),
    ("OTEL_TRACES_SAMPLER_ARG", "2", "[0.0, 1.0]"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "-5", "positive integer"),
    ("OMNII_OBS_EXCLUDE_PATHS", "health", "starting with '/'"),
    ("OMNII_OBS_EXCLUDE_PATHS", "/a*b", "ending in '*'"),
    ("OMNII_OBS_METRICS_SINK", "/no/such/dir/metrics.jsonl", "existing directory"),
    ("OMNII_OBS_METRICS_SINK", "/tmp", "existing directory"),
    ("OMNII_OBS_METRICS_MAX_QUEUE", "0", "positive integer"),
    ("OMNII_OBS_METRICS_FLUSH_INTERVAL", "0", "a number in"),
    ("OMNII_OBS_LATENCY", "maybe", "true, false"),
    ("OMNII_OBS_SENTRY_IGNORE_ERRORS", "Not An Error", "exception names"),
    ("OMNII_OBS_SENTRY_CAPTURE_STATUS", "700", "100-599"),
    ("OMNII_OBS_SENTRY_CAPTURE_STATUS", "599-500", "100-599"),
    ("OMNII_OBS_SENTRY_SEND_PII", "2", "true, false"),
    ("OMNII_OBS_SENTRY_FLUSH_TIMEOUT", "-1", "a number in"),
    ("OMNII_OBS_TRACING", "enable", "true, false"),
    ("OMNII_OBS_SHUTDOWN_TIMEOUT", "forever", "a number in"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console, otlp,console, or none"),
    ("OTEL_TRACES_EXPORTER", "otlp,none", "otlp, console, otlp,console, or none"),
    ("OTEL_TRACES_EXPORTER", ",", "otlp, console, otlp,console, or none"),
    ("OTEL_METRICS_EXPORTER", "prometheus", "otlp or none"),
    ("OTEL_METRICS_EXPORTER", "console", "otlp or none"),
    ("OTEL_LOGS_EXPORTER", "console", "otlp or none"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_bad_value_names_variable_value_and_what_is_allowed(name: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env({name: value})
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert name in message
    assert allowed in message
    if name not in ("SENTRY_DSN", "OTEL_EXPORTER_OTLP_HEADERS"):  # secrets are never echoed
        assert repr(value) in message
    assert [p[0] for p in info.value.problems] == [name]


@pytest.mark.parametrize(
    ("name", "value", "field", "parsed"),
    [
        ("OTEL_TRACES_EXPORTER", "otlp", "traces_exporter", ("otlp",)),
        ("OTEL_TRACES_EXPORTER", "none", "traces_exporter", ("none",)),
        ("OTEL_TRACES_EXPORTER", "console", "traces_exporter", ("console",)),
        ("OTEL_TRACES_EXPORTER", " OTLP , console,otlp", "traces_exporter", ("otlp", "console")),
        ("OTEL_METRICS_EXPORTER", "otlp", "metrics_exporter", ("otlp",)),
        ("OTEL_METRICS_EXPORTER", "None", "metrics_exporter", ("none",)),
        ("OTEL_LOGS_EXPORTER", "otlp", "logs_exporter", ("otlp",)),
        ("OTEL_LOGS_EXPORTER", "none", "logs_exporter", ("none",)),
    ],
)
def test_exporter_variables_accept_otlp_and_none(name: str, value: str, field: str, parsed: tuple[str, ...]) -> None:
    config = ObservabilityConfig.from_env({name: value, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert getattr(config.tracing, field) == parsed


def test_exporter_none_turns_its_endpoint_off() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    default = ObservabilityConfig.from_env(endpoint).tracing
    assert (default.traces_endpoint, default.metrics_endpoint) == ("http://collector:4317", "http://collector:4317")
    no_metrics = ObservabilityConfig.from_env({**endpoint, "OTEL_METRICS_EXPORTER": "none"}).tracing
    assert (no_metrics.traces_endpoint, no_metrics.metrics_endpoint) == ("http://collector:4317", None)
    no_traces = ObservabilityConfig.from_env({**endpoint, "OTEL_TRACES_EXPORTER": "none"}).tracing
    assert (no_traces.traces_endpoint, no_traces.metrics_endpoint, no_traces.console) == (
        None,
        "http://collector:4317",
        False,
    )
    console = ObservabilityConfig.from_env({**endpoint, "OTEL_TRACES_EXPORTER": "console"}).tracing
    assert (console.traces_endpoint, console.console) == (None, True)
    logs_off = ObservabilityConfig.from_env({**endpoint, "OTEL_LOGS_EXPORTER": "none"}).tracing
    assert (logs_off.traces_endpoint, logs_off.metrics_endpoint) == ("http://collector:4317", "http://collector:4317")


def test_exporter_lists_in_code_are_validated() -> None:
    with pytest.raises(ConfigError, match="metrics_exporter"):
        TracingConfig(metrics_exporter=())
    with pytest.raises(ConfigError, match="traces_exporter"):
        TracingConfig(traces_exporter=("otlp", "none"))
    assert TracingConfig(traces_exporter=("console",)).console is True


@pytest.mark.parametrize(
    ("environment", "warned"),
    [("production", False), ("development", False), ("test", False), ("staging", False), ("prod", True)],
)
def test_environment_warning_names_what_an_unknown_app_env_selects(environment: str, warned: bool) -> None:
    warning = ObservabilityConfig(environment=environment).environment_warning()
    assert (warning is not None) == warned
    if warning is not None:
        assert "APP_ENV='prod' is not one of production, development, test, staging" in warning
        assert "non-production" in warning
        assert "100%" in warning
    explicit = ObservabilityConfig(environment="prod", sentry=SentryConfig(traces_sample_rate=0.2))
    assert "SENTRY_TRACES_SAMPLE_RATE=0.2" in (explicit.environment_warning() or "")


def test_all_bad_variables_are_reported_at_once() -> None:
    env = {"APP_ENV": "a b", "SENTRY_TRACES_SAMPLE_RATE": "7", "OMNII_OBS_METRICS_SINK": "/no/such/x", "OK": "1"}
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env(env)
    assert sorted(p[0] for p in info.value.problems) == [
        "APP_ENV",
        "OMNII_OBS_METRICS_SINK",
        "SENTRY_TRACES_SAMPLE_RATE",
    ]
    for name in ("APP_ENV", "SENTRY_TRACES_SAMPLE_RATE", "OMNII_OBS_METRICS_SINK"):
        assert name in str(info.value)


@pytest.mark.parametrize("name", [name for name, _, _ in BAD_VALUES])
def test_empty_string_means_unset_so_the_default_applies(name: str) -> None:
    assert ObservabilityConfig.from_env({name: ""}) == ObservabilityConfig()


def test_a_bad_dsn_is_reported_without_showing_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env({"SENTRY_DSN": "https://supersecretkey@host/not-a-number"})
    assert "supersecretkey" not in str(info.value)
    assert "SENTRY_DSN" in str(info.value)


def test_printing_a_config_never_shows_dsn_key_or_header_values() -> None:
    config = ObservabilityConfig.from_env(
        {
            "SENTRY_DSN": "https://abcdef0123456789:oldsecret@o1.ingest.example.invalid/42",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@collector:4317",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20tok3n",
        }
    )
    for text in (repr(config), str(config), f"{config}", repr(config.sentry) + repr(config.tracing)):
        assert "abcdef0123456789" not in text
        assert "oldsecret" not in text
        assert "tok3n" not in text
        assert ":pw@" not in text
        assert "o1.ingest.example.invalid/42" in text
        assert "authorization" in text


def test_config_is_usable_in_code_and_validated() -> None:
    config = ObservabilityConfig(environment="production", sentry=SentryConfig(traces_sample_rate=0.5))
    assert config.sentry_traces_sample_rate == 0.5
    with pytest.raises(ConfigError, match="traces_sample_rate"):
        SentryConfig(traces_sample_rate=2.0)
    with pytest.raises(AttributeError):
        config.environment = "x"  # type: ignore[misc]


def test_unknown_prefixed_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="litestar_omnii_obs"):
        ObservabilityConfig.from_env({"OMNII_OBS_EXCLUDE_PATH": "/x"})
    assert any("OMNII_OBS_EXCLUDE_PATH" in r.getMessage() and "unknown" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:hunter2@collector:4317", "http://***@collector:4317"),
        ("https://collector:4318/?api_key=hunter2&tenant=a", "https://collector:4318/?api_key=***&tenant=***"),
        ("https://hunter2key@o1.ingest.example/5", "https://***@o1.ingest.example/5"),
        ("http://collector:4317", "http://collector:4317"),
    ],
)
def test_printed_urls_hide_user_info_and_query_values(url: str, shown: str) -> None:
    from litestar_omnii_obs._internal.config import redact_url

    assert redact_url(url) == shown
    config = ObservabilityConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": url})
    assert "hunter2" not in repr(config)


def test_line_attributes_may_not_take_the_lines_own_fields() -> None:
    with pytest.raises(ConfigError) as in_code:
        LatencyConfig(line_attributes=("tenant", "route", "status"))
    [(name, value, allowed)] = in_code.value.problems
    assert (name, value) == ("latency.line_attributes", "route,status")
    assert "trace_id" in allowed
    with pytest.raises(ConfigError) as from_env:
        ObservabilityConfig.from_env({"OMNII_OBS_LINE_ATTRIBUTES": "tenant,metric"})
    [(name, value, allowed)] = from_env.value.problems
    assert (name, value) == ("OMNII_OBS_LINE_ATTRIBUTES", "tenant,metric")
    assert "none of the line's own fields" in allowed
    assert ObservabilityConfig.from_env({"OMNII_OBS_LINE_ATTRIBUTES": "tenant,user.id"}).latency.line_attributes == (
        "tenant",
        "user.id",
    )


def test_from_env_with_a_mapping_for_a_section_keeps_the_rest_of_that_section() -> None:
    def hook(event: Any, hint: Any) -> Any:
        return event

    environ = {"SENTRY_DSN": "http://k@127.0.0.1:9/1", "OMNII_OBS_SENTRY_SEND_PII": "true"}
    merged = ObservabilityConfig.from_env(environ, sentry={"before_send": hook})
    assert (merged.sentry.dsn, merged.sentry.send_default_pii, merged.sentry.before_send) == (
        "http://k@127.0.0.1:9/1",
        True,
        hook,
    )
    replaced = ObservabilityConfig.from_env(environ, sentry=SentryConfig(before_send=hook))
    assert (replaced.sentry.dsn, replaced.sentry.before_send) == (None, hook)
