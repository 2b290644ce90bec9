"""The variable table and its reader (env.py): what each variable sets, what it refuses, what it hides.

``read_environ`` is called with a plain mapping, as ``ObservabilityConfig.from_env`` calls it
with ``os.environ``; the table drives parsing, redaction and the CLI, so these tests read the
table rather than a copy of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from litestar_omnii_obs import ConfigError, ObservabilityConfig
from litestar_omnii_obs._internal.env import ENV_PREFIX, VARIABLES, display_value, read_environ


def test_an_empty_environment_is_the_default_config_and_sets_nothing() -> None:
    config, sources = read_environ({})
    assert config == ObservabilityConfig()
    assert sources == {}


def test_each_variable_sets_its_field_and_is_named_as_its_source(tmp_path: Path) -> None:
    environ = {
        "APP_ENV": "staging",
        "OMNII_OBS_METRICS_SINK": str(tmp_path / "m.jsonl"),
        "SENTRY_TRACES_SAMPLE_RATE": "0.25",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=acme,Authorization=Bearer%20t",
        "OMNII_OBS_SENTRY_CAPTURE_STATUS": "500-502,504",
        "OMNII_OBS_EXCLUDE_PATHS": "/health,/internal/*",
    }
    config, sources = read_environ(environ)
    assert config.environment == "staging"
    assert config.metrics.sink == str(tmp_path / "m.jsonl")
    assert config.sentry.traces_sample_rate == 0.25
    assert config.tracing.otlp_endpoint == "http://collector:4317"
    assert config.tracing.otlp_headers == (("x-tenant", "acme"), ("authorization", "Bearer t"))
    assert config.sentry.capture_status_codes == frozenset({500, 501, 502, 504})
    assert config.latency.exclude_paths == ("/health", "/internal/*")
    assert sources["tracing.otlp_headers"] == "OTEL_EXPORTER_OTLP_HEADERS"
    assert sources["sentry.traces_sample_rate"] == "SENTRY_TRACES_SAMPLE_RATE"
    assert set(sources) == {var.field for var in VARIABLES if var.name in environ}


def test_every_invalid_variable_is_reported_at_once_with_what_is_allowed() -> None:
    environ = {
        "SENTRY_TRACES_SAMPLE_RATE": "1.5",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
        "OMNII_OBS_EXCLUDE_PATHS": "health",
        "OMNII_OBS_SENTRY_CAPTURE_STATUS": "600",
    }
    with pytest.raises(ConfigError) as raised:
        read_environ(environ)
    problems = {name: (value, allowed) for name, value, allowed in raised.value.problems}
    assert set(problems) == set(environ)
    assert problems["SENTRY_TRACES_SAMPLE_RATE"] == ("1.5", "a number in [0.0, 1.0]")
    assert "grpc" in problems["OTEL_EXPORTER_OTLP_PROTOCOL"][1]
    assert "SENTRY_TRACES_SAMPLE_RATE='1.5'" in str(raised.value)


def test_an_invalid_secret_is_reported_without_its_secret() -> None:
    environ = {
        "SENTRY_DSN": "https://s3cr3t-key@sentry.example",  # no project id
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer s3cr3t-token,=nameless",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:s3cr3t-pw@collector:4317",
    }
    with pytest.raises(ConfigError) as raised:
        read_environ(environ)
    assert "s3cr3t" not in str(raised.value)
    assert {name for name, _, _ in raised.value.problems} == set(environ)


def test_the_batch_may_not_exceed_the_queue_and_the_variable_that_broke_it_is_named() -> None:
    with pytest.raises(ConfigError) as raised:
        read_environ({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200"})
    ((name, value, allowed),) = raised.value.problems
    assert (name, value) == ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200")
    assert "at most the queue size (100)" in allowed
    config, _ = read_environ({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"})
    assert config.tracing.bsp_max_export_batch_size == 100


def test_an_empty_variable_counts_as_unset() -> None:
    config, sources = read_environ({"SENTRY_TRACES_SAMPLE_RATE": "", "OTEL_TRACES_SAMPLER": ""})
    assert config == ObservabilityConfig()
    assert sources == {}


def test_the_console_traces_exporter_turns_the_console_on() -> None:
    config, sources = read_environ({"OTEL_TRACES_EXPORTER": "otlp,console"})
    assert config.tracing.console is True
    assert sources["tracing.console"] == "OTEL_TRACES_EXPORTER"


def test_unknown_prefixed_variables_get_one_warning_naming_them(obs_log: list[logging.LogRecord]) -> None:
    read_environ({f"{ENV_PREFIX}TRACNG": "true", f"{ENV_PREFIX}SINKK": "x", "UNRELATED_VAR": "1"})
    (warning,) = [r for r in obs_log if "unknown variable" in r.getMessage()]
    message = warning.getMessage()
    assert f"{ENV_PREFIX}SINKK, {ENV_PREFIX}TRACNG" in message
    assert "UNRELATED_VAR" not in message
    assert f"{ENV_PREFIX}TRACING" in message  # the known ones are listed, to spot the typo


def test_secret_fields_are_displayed_by_the_table_s_rule() -> None:
    assert display_value("sentry.dsn", "https://key@o1.ingest.sentry.io/42") == "https://***@o1.ingest.sentry.io/42"
    assert display_value("tracing.otlp_headers", (("authorization", "Bearer t"), ("x-a", "1"))) == (
        "authorization=***,x-a=***"
    )
    assert display_value("tracing.otlp_headers", ()) == "-"
    assert display_value("sentry.dsn", None) == "-"


def test_plain_fields_are_displayed_as_the_variable_would_carry_them() -> None:
    assert display_value("tracing.enabled", False) == "false"
    assert display_value("sentry.capture_status_codes", frozenset({500, 501, 502, 504})) == "500-502,504"
    assert display_value("sentry.capture_status_codes", frozenset()) == "none"
    assert display_value("latency.exclude_paths", ("/a", "/b*")) == "/a,/b*"
    assert display_value("sentry.traces_sample_rate", 0.5) == "0.5"


def test_the_table_names_each_variable_and_each_field_once() -> None:
    names = [var.name for var in VARIABLES]
    fields = [var.field for var in VARIABLES]
    assert len(names) == len(set(names))
    assert len(fields) == len(set(fields))
    for var in VARIABLES:
        assert var.allowed, f"{var.name} says nothing about what is allowed"
        assert var.secret in ("", "url", "value")
