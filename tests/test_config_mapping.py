"""The config is the whole truth: a mapping given to ``from_env`` wins over a conflicting ``os.environ``.

Each field the OpenTelemetry SDK would otherwise read from the process environment is set one way in the mapping and
the other way in ``os.environ``; what the app then does (spans recorded, where they go, what they carry) must follow
the mapping.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from litestar_omnii_obs import ApiLatencyMetric, ObservabilityConfig, ObservabilityPlugin
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.peers.otlp_http_receiver import OtlpHttpReceiver

# These tests are about the sampling the app is configured with, so the capture keeps it.
pytestmark = pytest.mark.obs_capture(sampling="app")


@get("/ping")
async def ping() -> str:
    return "pong"


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SENTRY_", "OMNII_OBS_", "APP_")):
            monkeypatch.delenv(name)
    return monkeypatch


def run(mapping: Mapping[str, str], requests: int = 3) -> ObservabilityPlugin:
    plugin = ObservabilityPlugin(ObservabilityConfig.from_env({"OMNII_OBS_METRICS_SINK": "off", **mapping}))
    with TestClient(Litestar(route_handlers=[ping], plugins=[plugin])) as client:
        for _ in range(requests):
            assert client.get("/ping").text == "pong"
    return plugin


def test_sampler_in_the_mapping_wins(clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture) -> None:
    clean_environ.setenv("OTEL_TRACES_SAMPLER", "always_on")
    run({"OTEL_TRACES_SAMPLER": "always_off"})
    assert obs_capture.spans == ()
    assert len(obs_capture.records(ApiLatencyMetric)) == 3  # records stay


def test_sampler_on_in_the_mapping_wins_over_off_in_the_environment(
    clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture
) -> None:
    clean_environ.setenv("OTEL_TRACES_SAMPLER", "always_off")
    run({"OTEL_TRACES_SAMPLER": "always_on"})
    assert [s.name for s in obs_capture.spans] == ["GET /ping"] * 3


def test_sampler_arg_in_the_mapping_wins(clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture) -> None:
    clean_environ.setenv("OTEL_TRACES_SAMPLER_ARG", "1.0")
    run({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"})
    assert obs_capture.spans == ()


def test_default_sampling_follows_the_sentry_rate_of_the_mapping(
    clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture
) -> None:
    clean_environ.setenv("SENTRY_TRACES_SAMPLE_RATE", "1.0")
    run({"SENTRY_TRACES_SAMPLE_RATE": "0"})
    assert obs_capture.spans == ()


def test_resource_attributes_and_service_name_in_the_mapping_win(
    clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture
) -> None:
    clean_environ.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=from-environ")
    clean_environ.setenv("OTEL_SERVICE_NAME", "from-environ")
    run({"OTEL_RESOURCE_ATTRIBUTES": "team=payments", "OTEL_SERVICE_NAME": "billing"}, requests=1)
    [span] = obs_capture.spans
    assert span.resource.attributes["team"] == "payments"
    assert span.resource.attributes["service.name"] == "billing"


def test_sdk_disabled_in_the_mapping_wins(
    clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture, obs_log: list[logging.LogRecord]
) -> None:
    clean_environ.setenv("OTEL_SDK_DISABLED", "false")
    run({"OTEL_SDK_DISABLED": "true"})
    assert obs_capture.spans == ()
    assert len(obs_capture.records(ApiLatencyMetric)) == 3  # latency records stay
    assert sum("OTEL_SDK_DISABLED" in r.getMessage() for r in obs_log) == 1


def test_sdk_enabled_in_the_mapping_wins_over_disabled_in_the_environment(
    clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture
) -> None:
    clean_environ.setenv("OTEL_SDK_DISABLED", "true")
    run({"OTEL_SDK_DISABLED": "false"})
    assert [s.name for s in obs_capture.spans] == ["GET /ping"] * 3


def test_sdk_disabled_turns_off_spans_and_export_but_not_records(tmp_path: Path) -> None:
    sink = tmp_path / "m.jsonl"
    with OtlpHttpReceiver() as receiver:
        config = ObservabilityConfig.from_env(
            {
                "OTEL_SDK_DISABLED": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OMNII_OBS_METRICS_SINK": str(sink),
            }
        )
        with TestClient(Litestar(route_handlers=[ping], plugins=[ObservabilityPlugin(config)])) as client:
            response = client.get("/ping")
        assert receiver.spans() == []
    assert "x-request-id" not in response.headers
    assert '"api_latency"' in sink.read_text()


def test_batch_schedule_delay_in_the_mapping_wins(clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # ten minutes: nothing would arrive before shutdown
    with OtlpHttpReceiver() as receiver:
        plugin = ObservabilityPlugin(
            ObservabilityConfig.from_env(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "50",
                    "OMNII_OBS_METRICS_SINK": "off",
                }
            )
        )
        with TestClient(Litestar(route_handlers=[ping], plugins=[plugin])) as client:
            client.get("/ping")
            deadline = time.monotonic() + 10
            while not receiver.spans() and time.monotonic() < deadline:
                time.sleep(0.02)
            arrived_while_running = len(receiver.spans())
    assert arrived_while_running == 1


def test_protocol_in_the_mapping_wins(clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with OtlpHttpReceiver() as receiver:
        run({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        spans = receiver.wait_for_spans(3)
    assert [s.name for s in spans] == ["GET /ping"] * 3
    assert {r.path for r in receiver.requests()} >= {"/v1/traces"}


def test_compression_variables_reach_the_wire(clean_environ: pytest.MonkeyPatch) -> None:
    with OtlpHttpReceiver() as receiver:
        run(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "none",
            }
        )
        receiver.wait_for_spans(3)
        receiver.wait_for_metric("http.server.request.duration")
        encodings = {(r.path, r.content_encoding) for r in receiver.requests()}
    assert encodings == {("/v1/traces", "gzip"), ("/v1/metrics", None)}


def test_metrics_over_http_reach_v1_metrics(clean_environ: pytest.MonkeyPatch) -> None:
    with OtlpHttpReceiver() as receiver:
        run({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        points = receiver.wait_for_metric("http.server.request.duration")
    assert points
    assert {p.attributes["url.scheme"] for p in points} == {"http"}


def test_metrics_exporter_none_sends_no_metric_while_spans_still_go(
    clean_environ: pytest.MonkeyPatch, obs_log: list[logging.LogRecord]
) -> None:
    with OtlpHttpReceiver() as receiver:
        plugin = run({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRICS_EXPORTER": "none"})
        spans = receiver.wait_for_spans(3)
        signals = {request.signal for request in receiver.requests()}
    assert [s.name for s in spans] == ["GET /ping"] * 3
    assert signals == {"traces"}  # the shutdown exported its spans; no metric request ever came
    assert receiver.metric_points(include_rejected=True) == []
    assert not [r for r in obs_log if "metric" in r.getMessage().lower() and r.levelno >= logging.WARNING]
    assert plugin.tracer_provider is None  # shut down


def test_traces_exporter_none_sends_no_span_but_ids_and_metrics_stay(
    clean_environ: pytest.MonkeyPatch, obs_log: list[logging.LogRecord]
) -> None:
    with OtlpHttpReceiver() as receiver:
        config = ObservabilityConfig.from_env(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_TRACES_EXPORTER": "none",
                "OMNII_OBS_METRICS_SINK": "off",
            }
        )
        with TestClient(Litestar(route_handlers=[ping], plugins=[ObservabilityPlugin(config)])) as client:
            response = client.get("/ping")
        points = receiver.wait_for_metric("http.server.request.duration")  # metrics still go (at shutdown)
        signals = {request.signal for request in receiver.requests()}
    assert len(response.headers["x-request-id"]) == 32
    assert points
    assert signals == {"metrics"}
    assert receiver.spans(include_rejected=True) == []
    assert not [r for r in obs_log if "OTEL_EXPORTER_OTLP_ENDPOINT" in r.getMessage()]  # it is set; none was asked
