"""What a user sees follow the standards: ``error.type``, ``sampled`` on lines, OpenTelemetry's and Sentry's
defaults, and no silent decision about Sentry.

Real peers throughout: uvicorn on 127.0.0.1, an OTLP receiver, a Sentry ingest endpoint; the
metric lines are read from the file a log shipper would read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from sentry_sdk.utils import get_default_release

from litestar_omnii_obs import (
    GraphQueryMetric,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
    capture_error,
    log_metric,
)
from litestar_omnii_obs._internal.config import Sampler
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.conftest import read_lines, serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest


class QuotaExceeded(Exception):
    """An application's own error: its spans name it with its module."""


class UpstreamTimeout(TimeoutError):
    """A subclass of an ignored type: ignored too, and the log line says which entry matched."""


@get("/quota")
async def quota() -> None:
    raise QuotaExceeded("over the limit")


@get("/timeout")
async def timeout() -> None:
    raise TimeoutError("upstream slow")


@get("/upstream")
async def upstream() -> None:
    raise UpstreamTimeout("upstream slower")


@get("/reset")
async def reset() -> None:
    raise ConnectionResetError("peer reset")


@get("/unavailable")
async def unavailable() -> None:
    raise HTTPException(status_code=503, detail="try later")


@get("/crash")
async def crash() -> None:
    raise RuntimeError("crash")


@get("/bad-gateway")
async def bad_gateway() -> Response[str]:
    return Response("upstream said no", status_code=502)


@get("/ok")
async def ok() -> str:
    log_metric(GraphQueryMetric(query_type="cypher", duration=1.0))
    return "ok"


@get("/orders/{order_id:int}")
async def order(order_id: FromPath[int]) -> dict[str, str | None]:
    return {"event_id": capture_error(LookupError(f"order {order_id} not found"), tags={"step": "lookup"})}


HANDLERS = [quota, timeout, upstream, reset, unavailable, crash, bad_gateway, ok, order]


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


def run(config: ObservabilityConfig, *requests: tuple[str, dict[str, str]]) -> list[httpx.Response]:
    """Each ``(path, headers)`` sent to the app under uvicorn; the app has stopped (lines and spans flushed)."""
    app = Litestar(route_handlers=HANDLERS, plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        return [client.get(path, headers=headers) for path, headers in requests]


def traced(receiver: OtlpHttpReceiver, sink: Path, sampler: Sampler = "always_on") -> ObservabilityConfig:
    return ObservabilityConfig(
        metrics=MetricsConfig(sink=str(sink)),
        tracing=TracingConfig(otlp_endpoint=receiver.endpoint, sampler=sampler, shutdown_timeout=10.0),
    )


# --------------------------------------------------------------------------- error.type


def test_error_type_is_the_qualified_exception_type_on_spans_and_durations(
    receiver: OtlpHttpReceiver, sink: Path
) -> None:
    paths = ("/quota", "/timeout", "/bad-gateway", "/ok")
    assert [r.status_code for r in run(traced(receiver, sink), *((p, {}) for p in paths))] == [500, 500, 502, 200]
    spans = {span.attributes["http.route"]: span for span in receiver.wait_for_spans(4)}
    quota_span = spans["/quota"]
    assert quota_span.attributes["error.type"] == "tests.test_conventions.QuotaExceeded"
    [event] = quota_span.events
    assert event.attributes["exception.type"] == quota_span.attributes["error.type"]  # one name for one error
    assert spans["/timeout"].attributes["error.type"] == "TimeoutError"  # a built-in type: no module
    assert spans["/bad-gateway"].attributes["error.type"] == "502"  # no exception: the status code
    assert "error.type" not in spans["/ok"].attributes
    points = {
        p.attributes["http.route"]: p.attributes for p in receiver.wait_for_metric("http.server.request.duration")
    }
    assert {route: points[route].get("error.type") for route in points} == {
        "/quota": "tests.test_conventions.QuotaExceeded",
        "/timeout": "TimeoutError",
        "/bad-gateway": "502",
        "/ok": None,
    }


def test_the_line_keeps_the_bare_exception_name_it_documents(receiver: OtlpHttpReceiver, sink: Path) -> None:
    run(traced(receiver, sink), ("/quota", {}), ("/bad-gateway", {}))
    errors = [line.get("error") for line in read_lines(sink) if line["metric"] == "api_latency"]
    assert errors == ["QuotaExceeded", None]


# --------------------------------------------------------------------------- sampled on lines


def test_lines_say_the_trace_is_sampled(receiver: OtlpHttpReceiver, sink: Path) -> None:
    [response] = run(traced(receiver, sink), ("/ok", {}))
    graph, latency = read_lines(sink)
    assert (graph["metric"], latency["metric"]) == ("graph_query_duration", "api_latency")
    assert (graph["sampled"], latency["sampled"]) == (True, True)
    assert graph["trace_id"] == latency["trace_id"] == response.headers["x-request-id"]
    assert receiver.wait_for_spans(1)[0].trace_id == latency["trace_id"]  # a trace to find under that id


def test_lines_say_the_trace_was_dropped(receiver: OtlpHttpReceiver, sink: Path) -> None:
    [response] = run(traced(receiver, sink, "always_off"), ("/ok", {}))
    graph, latency = read_lines(sink)
    assert (graph["sampled"], latency["sampled"]) == (False, False)
    assert graph["trace_id"] == latency["trace_id"] == response.headers["x-request-id"]  # ids to correlate logs


def test_a_caller_s_sampled_trace_is_sampled_on_the_line(receiver: OtlpHttpReceiver, sink: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    run(traced(receiver, sink, "parentbased_always_off"), ("/ok", caller))
    [latency] = [line for line in read_lines(sink) if line["metric"] == "api_latency"]
    assert (latency["trace_id"], latency["sampled"]) == (trace_id, True)


def test_lines_have_no_sampled_field_without_tracing(sink: Path) -> None:
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(sink)), tracing=TracingConfig(enabled=False))
    run(config, ("/ok", {}))
    for line in read_lines(sink):
        assert not {"trace_id", "span_id", "sampled"} & set(line)


def test_the_typed_record_path_writes_the_same_sampled_field(
    obs_capture: ObservabilityCapture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Under obs_capture (request observers) the line is built from the typed record, on stdout: same field."""
    run(ObservabilityConfig(), ("/ok", {}))
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith('{"metric"')]
    assert [(line["metric"], line["sampled"]) for line in lines] == [
        ("graph_query_duration", True),
        ("api_latency", True),
    ]


# --------------------------------------------------------------------------- defaults


def test_defaults_are_opentelemetry_s_and_sentry_s(
    receiver: OtlpHttpReceiver, ingest: SentryIngest, sink: Path
) -> None:
    config = ObservabilityConfig(
        metrics=MetricsConfig(sink=str(sink)),
        sentry=SentryConfig(dsn=ingest.dsn, flush_timeout=3.0),
        tracing=TracingConfig(otlp_endpoint=receiver.endpoint, sampler="always_on", shutdown_timeout=10.0),
    )
    run(config, ("/crash", {}))
    [line] = read_lines(sink)
    assert line["service"] == "unknown_service"
    resource = receiver.wait_for_spans(1)[0].resource_attributes
    assert resource["service.name"] == "unknown_service"
    assert "service.version" not in resource  # none invented
    [event] = ingest.wait_for_events(1)
    assert event.get("release") == get_default_release()  # sentry-sdk's own default, not one of ours
    assert event.get("release") != "1.0.0"


def test_the_service_name_and_version_in_otel_resource_attributes_are_used(
    receiver: OtlpHttpReceiver, sink: Path
) -> None:
    config = ObservabilityConfig.from_env(
        {
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=checkout,service.version=2.4.1,team=payments",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
            "OMNII_OBS_METRICS_SINK": str(sink),
        }
    )
    run(config, ("/ok", {}))
    assert {line["service"] for line in read_lines(sink)} == {"checkout"}
    resource = receiver.wait_for_spans(1)[0].resource_attributes
    assert (resource["service.name"], resource["service.version"], resource["team"]) == (
        "checkout",
        "2.4.1",
        "payments",
    )


def test_otel_service_name_wins_over_the_resource_attributes() -> None:
    config = ObservabilityConfig.from_env(
        {"OTEL_SERVICE_NAME": "billing", "OTEL_RESOURCE_ATTRIBUTES": "service.name=checkout"}
    )
    assert config.service_name == "billing"


# --------------------------------------------------------------------------- no silent decisions


def error_lines(records: list[logging.LogRecord]) -> dict[str, str]:
    """The ERROR line of each failed request, by route."""
    lines = [r.getMessage() for r in records if r.name == "litestar_omnii_obs.requests"]
    return {line.split()[1]: line for line in lines}


def sentry_config(dsn: str | None, sink: Path, **sentry: Any) -> ObservabilityConfig:
    return ObservabilityConfig(
        metrics=MetricsConfig(sink=str(sink)), sentry=SentryConfig(dsn=dsn, flush_timeout=3.0, **sentry)
    )


def test_the_error_line_says_why_sentry_did_not_get_the_error(
    ingest: SentryIngest, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    config = sentry_config(ingest.dsn, sink, capture_status_codes=frozenset({500}))
    paths = ("/timeout", "/upstream", "/reset", "/unavailable", "/crash")
    assert [r.status_code for r in run(config, *((p, {}) for p in paths))] == [500, 500, 500, 503, 500]
    lines = error_lines(obs_log)
    ignored = "is in ignore_errors (OMNII_OBS_SENTRY_IGNORE_ERRORS))"
    assert lines["/timeout"].endswith(f"(not sent to Sentry: TimeoutError {ignored}")
    assert lines["/upstream"].endswith(f"(not sent to Sentry: UpstreamTimeout (a TimeoutError) {ignored}")
    assert lines["/reset"].endswith(f"(not sent to Sentry: ConnectionResetError (a ConnectionError) {ignored}")
    assert lines["/unavailable"].endswith(
        "(not sent to Sentry: status 503 is not in capture_status_codes (OMNII_OBS_SENTRY_CAPTURE_STATUS))"
    )
    assert "Sentry" not in lines["/crash"]  # sent: nothing to explain
    [event] = ingest.wait_for_events(1)
    assert event["exception"]["values"][0]["type"] == "RuntimeError"


def test_an_ignored_error_the_user_removed_from_the_list_is_sent_and_the_line_says_nothing(
    ingest: SentryIngest, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    run(sentry_config(ingest.dsn, sink, ignore_errors=("asyncio.CancelledError",)), ("/timeout", {}))
    assert "Sentry" not in error_lines(obs_log)["/timeout"]
    [event] = ingest.wait_for_events(1)
    assert event["exception"]["values"][0]["type"] == "TimeoutError"


def test_without_sentry_the_error_line_adds_nothing(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    run(sentry_config(None, sink), ("/timeout", {}))
    assert error_lines(obs_log)["/timeout"].endswith(")")  # "(trace_id=...)": the start-up warning said it once
    assert "not sent" not in error_lines(obs_log)["/timeout"]


def test_capture_error_in_a_request_carries_its_transaction_route_and_scrubbed_data(
    ingest: SentryIngest, sink: Path
) -> None:
    headers = {"authorization": "Bearer s3cr3t-t0ken-value", "x-tenant": "acme"}
    app = Litestar(route_handlers=HANDLERS, plugins=[ObservabilityPlugin(sentry_config(ingest.dsn, sink))])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/orders/7", params={"token": "qu3ry-s3cret", "page": "2"}, headers=headers)
    assert response.status_code == 200
    [event] = ingest.wait_for_events(1)
    assert event["event_id"] == response.json()["event_id"]
    assert event["transaction"] == "GET /orders/{order_id}"
    assert (event["tags"]["http.route"], event["tags"]["step"]) == ("/orders/{order_id}", "lookup")
    assert event["tags"]["trace_id"] == response.headers["x-request-id"]
    assert "http.status_code" not in event["tags"]  # no response yet when it was captured
    request = event["request"]
    assert (request["method"], request["url"]) == ("GET", f"{url}/orders/7")
    assert request["headers"]["authorization"] == "[Filtered]"
    assert request["headers"]["x-tenant"] == "acme"
    assert "page=2" in request["query_string"]
    sent = b"".join(ingest.raw_bodies())
    assert b"s3cr3t-t0ken-value" not in sent
    assert b"qu3ry-s3cret" not in sent
