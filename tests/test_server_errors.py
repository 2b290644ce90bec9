"""No silent 500s: each exception that becomes a 5xx is logged once, with its traceback and trace id."""

from __future__ import annotations

import logging
from pathlib import Path

from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.testing import TestClient

from litestar_omnii_obs import ApiLatencyMetric, LatencyConfig, MetricsConfig, ObservabilityConfig, ObservabilityPlugin
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.conftest import read_lines


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom: the database is on fire")


@get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="short and stout")


def errors(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.ERROR]


def run(config: ObservabilityConfig, *paths: str) -> list[str]:
    app = Litestar(route_handlers=[boom, teapot], plugins=[ObservabilityPlugin(config)])
    with TestClient(app) as client:
        return [client.get(path).headers.get("x-request-id", "") for path in paths]


def test_a_500_without_sentry_is_logged_once_with_traceback_and_trace_id(
    sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    [request_id] = run(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink))), "/boom")
    [record] = errors(obs_log)
    assert record.name == "litestar_omnii_obs.requests"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "GET /boom -> 500: RuntimeError" in record.getMessage()
    assert f"trace_id={request_id}" in record.getMessage()
    [line] = read_lines(sink)
    assert (line["metric"], line["status"], line["error"]) == ("api_latency", 500, "RuntimeError")


def test_client_errors_are_not_logged_and_carry_no_error(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    run(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink))), "/teapot", "/missing")
    assert errors(obs_log) == []
    assert [(line["status"], "error" in line) for line in read_lines(sink)] == [(418, False), (404, False)]


def test_the_log_line_can_be_turned_off(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    config = ObservabilityConfig.from_env({"OMNII_OBS_LOG_ERRORS": "false", "OMNII_OBS_METRICS_SINK": str(sink)})
    assert config.latency == LatencyConfig(log_server_errors=False)
    run(config, "/boom")
    assert errors(obs_log) == []
    assert read_lines(sink)[0]["error"] == "RuntimeError"  # the record still says what failed


def test_the_log_line_never_becomes_a_second_sentry_event(
    obs_capture: ObservabilityCapture, obs_log: list[logging.LogRecord]
) -> None:
    run(ObservabilityConfig(metrics=MetricsConfig(sink="off")), "/boom")
    assert len(errors(obs_log)) == 1
    [event] = obs_capture.sentry_events
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    [record] = obs_capture.records(ApiLatencyMetric)
    assert record.error == "RuntimeError"
