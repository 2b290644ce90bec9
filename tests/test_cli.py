"""``litestar obs``: the real ``litestar`` CLI in a subprocess, against real peers on 127.0.0.1.

Every command runs ``python -m litestar --app example_app.app:app obs ...`` with a minimal
environment, so only the variables a test sets reach the app. The subprocess timeout is the
only bound; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from litestar_omnii_obs import ObservabilityConfig, TracingConfig
from litestar_omnii_obs.cli import config_rows
from tests.conftest import free_port
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

ROOT = Path(__file__).resolve().parent.parent
APP = "example_app.app:app"
HEADER_SECRET = "hdr-secret-7f3a"


def litestar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``litestar --app example_app.app:app ARGS`` in a fresh process with only ``env`` set."""
    return subprocess.run(
        [sys.executable, "-m", "litestar", "--app", APP, *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def obs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return litestar("obs", *args, env=env)


def parsed(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return data


def by_pipe(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {pipe["pipe"]: pipe for pipe in data["pipes"]}


def row(output: str, first_column: str) -> list[str]:
    """The cells of the text-table line that starts with ``first_column``."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == first_column:
            return cells
    raise AssertionError(f"no row {first_column!r} in:\n{output}")


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


def dead_url() -> str:
    return f"127.0.0.1:{free_port()}"  # bound, then closed: nothing listens there


# --------------------------------------------------------------------------- the group


def test_obs_group_is_listed_in_litestar_help() -> None:
    result = litestar("--help")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\bobs\b", result.stdout)

    result = obs("--help")
    assert result.returncode == 0, result.stderr
    for command in ("config", "check", "test-error"):
        assert command in result.stdout


# --------------------------------------------------------------------------- obs config


def test_config_shows_where_each_value_came_from_and_hides_secrets() -> None:
    env = {
        "APP_ENV": "staging",
        "SENTRY_DSN": "https://dsnkey0123456789@sentry.example.com/42",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {HEADER_SECRET},x-tenant=tenant-secret",
    }
    text, as_json = obs("config", env=env), obs("config", "--json", env=env)
    for result in (text, as_json):
        assert result.returncode == 0, result.stderr
        for secret in ("dsnkey0123456789", HEADER_SECRET, "tenant-secret"):
            assert secret not in result.stdout + result.stderr

    assert row(text.stdout, "environment") == ["environment", "staging", "environment", "APP_ENV"]
    # example_app sets its own name and version in code (the package's defaults are OpenTelemetry's).
    assert row(text.stdout, "version") == ["version", "1.0.0", "code", "APP_VERSION"]

    rows = {r["name"]: r for r in parsed(as_json)["config"]}
    assert rows["sentry.dsn"] == {
        "name": "sentry.dsn",
        "value": "https://***@sentry.example.com/42",
        "source": "environment",
        "variable": "SENTRY_DSN",
    }
    assert rows["tracing.otlp_headers"]["value"] == "authorization=***,x-tenant=***"
    assert rows["tracing.otlp_headers"]["source"] == "environment"
    assert rows["tracing.otlp_endpoint"]["variable"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert rows["tracing.otlp_endpoint"]["source"] == "environment"
    assert (rows["service_name"]["value"], rows["service_name"]["source"]) == ("omnii-mcp", "code")
    assert rows["sentry.capture_status_codes"]["value"] == "500-599"
    assert rows["tracing.set_global_provider"] == {
        "name": "tracing.set_global_provider",
        "value": "true",
        "source": "default",
        "variable": None,
    }


def test_config_source_is_code_when_the_plugin_config_differs_from_defaults_and_environment() -> None:
    config = ObservabilityConfig(service_name="billing", tracing=TracingConfig(otlp_endpoint="http://u:pw@otel:4317"))
    rows = {r.name: r for r in config_rows(config, {"APP_ENV": "staging", "OTEL_SERVICE_NAME": "billing"})}

    assert rows["service_name"].source == "environment"  # what the environment says, and it is set
    assert rows["environment"].source == "code"  # APP_ENV is set, but the app chose "development" in code
    assert rows["tracing.otlp_endpoint"].source == "code"
    assert rows["tracing.otlp_endpoint"].value == "http://***@otel:4317"
    assert rows["version"].source == "default"


def test_config_exits_2_with_the_config_error_on_a_bad_environment() -> None:
    result = obs("config", env={"SENTRY_DSN": "not-a-dsn", "OMNII_OBS_METRICS_MAX_QUEUE": "-1"})

    assert result.returncode == 2, result.stdout + result.stderr
    assert "invalid observability configuration" in result.stderr
    assert "OMNII_OBS_METRICS_MAX_QUEUE='-1': a positive integer" in result.stderr
    assert "SENTRY_DSN='not-a-dsn'" in result.stderr  # no user-info in it, so nothing to hide
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- obs check


def test_check_sends_a_span_a_metric_point_and_an_event_to_live_peers(
    receiver: OtlpHttpReceiver, ingest: SentryIngest
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {HEADER_SECRET}",
        "OTEL_SERVICE_NAME": "cli-check",
        "SENTRY_DSN": ingest.dsn,
    }
    result = obs("check", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    for pipe in ("otlp-traces", "otlp-metrics", "sentry"):
        assert row(result.stdout, pipe)[2] == "ok", result.stdout
    assert row(result.stdout, "sentry")[1] == f"http://***@127.0.0.1:{ingest.port}/42"
    assert HEADER_SECRET not in result.stdout
    assert ingest.public_key not in result.stdout

    span = receiver.span("litestar obs check")
    assert span.resource_attributes["service.name"] == "cli-check"
    assert receiver.metric_points("omnii.check")
    assert {r.headers.get("authorization") for r in receiver.requests()} == {f"Bearer {HEADER_SECRET}"}
    assert span.trace_id in row(result.stdout, "otlp-traces")[-1]
    [event] = ingest.events()
    assert event["message"] == "litestar obs check from cli-check"
    assert event["event_id"] in row(result.stdout, "sentry")[-1]


def test_check_fails_with_exit_1_against_dead_ports() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{dead_url()}", "SENTRY_DSN": f"http://key@{dead_url()}/1"}
    result = obs("check", "--json", "--timeout", "1", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    data = parsed(result)
    assert data["ok"] is False
    pipes = by_pipe(data)
    assert [p["result"] for p in pipes.values()] == ["failed", "failed", "failed"]
    assert pipes["otlp-traces"]["detail"] == pipes["otlp-metrics"]["detail"] == "connection refused", pipes
    assert "refused" in pipes["sentry"]["detail"].lower()


@pytest.mark.parametrize(("status", "detail"), [(500, "HTTP 500"), (429, "HTTP 429 (rate limited)")])
def test_check_fails_when_sentry_answers_an_error(ingest: SentryIngest, status: int, detail: str) -> None:
    ingest.status = status
    result = obs("check", "--json", env={"SENTRY_DSN": ingest.dsn})

    assert result.returncode == 1, result.stdout + result.stderr
    pipes = by_pipe(parsed(result))
    assert pipes["sentry"]["result"] == "failed"
    assert pipes["sentry"]["detail"] == detail
    assert pipes["otlp-traces"]["result"] == pipes["otlp-metrics"]["result"] == "off"
    assert ingest.requests_received == 1


def test_check_shows_unconfigured_pipes_as_off_and_exits_0(ingest: SentryIngest) -> None:
    result = obs("check", env={"SENTRY_DSN": ingest.dsn})

    assert result.returncode == 0, result.stdout + result.stderr
    assert row(result.stdout, "otlp-traces")[2:] == ["off", "-", "OTEL_EXPORTER_OTLP_ENDPOINT not set"]
    assert row(result.stdout, "otlp-metrics")[2] == "off"
    assert row(result.stdout, "sentry")[2] == "ok"


@pytest.mark.parametrize("traces", ["unset", "dead"])
def test_check_sends_the_metric_point_to_the_metrics_endpoint_the_app_exports_to(
    traces: str, receiver: OtlpHttpReceiver
) -> None:
    # The app exports OTLP metrics to OTEL_EXPORTER_OTLP_METRICS_ENDPOINT whether or not a traces endpoint is set;
    # the check of that pipe must go (and say it goes) there.
    env = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.metrics_url}  # a signal's own endpoint is used as is
    if traces == "dead":
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://{dead_url()}"
    pipes = by_pipe(parsed(obs("check", "--json", "--timeout", "2", env=env)))

    assert pipes["otlp-metrics"]["result"] == "ok", pipes
    assert pipes["otlp-metrics"]["target"] == receiver.metrics_url
    assert receiver.metric_points("omnii.check")
    assert pipes["otlp-traces"]["result"] == ("off" if traces == "unset" else "failed")


# --------------------------------------------------------------------------- obs test-error


def test_test_error_reports_through_the_request_error_path_and_prints_the_event_id(ingest: SentryIngest) -> None:
    result = obs("test-error", "--message", "cli test error 42", env={"SENTRY_DSN": ingest.dsn, "APP_ENV": "staging"})

    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"event id: ([0-9a-f]{32})", result.stdout)
    assert match, result.stdout
    [event] = ingest.wait_for_events(1)
    assert event["event_id"] == match.group(1)
    [exception] = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("ObservabilityTestError", "cli test error 42")
    assert event["environment"] == "staging"
    assert event["tags"]["omnii.test_error"] == "true"
    assert ingest.public_key not in result.stdout + result.stderr


def test_test_error_without_a_dsn_says_so_and_fails() -> None:
    result = obs("test-error")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "SENTRY_DSN is not set" in result.stderr


def test_test_error_fails_when_sentry_is_unreachable() -> None:
    result = obs("test-error", "--timeout", "1", env={"SENTRY_DSN": f"http://key@{dead_url()}/1"})

    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"event id: [0-9a-f]{32}", result.stdout)
    assert "Sentry did not accept it" in result.stderr
