"""State belongs to each app's plugin: two or three apps in one process keep their own sinks, labels and providers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient, TestClient
from opentelemetry import trace

from litestar_omnii_obs import (
    GraphQueryMetric,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    TracingConfig,
    log_metric,
    timed_operation,
)
from tests.conftest import read_lines, serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver


@get("/work/{n:int}")
async def work(n: FromPath[int]) -> dict[str, int]:
    async with timed_operation("work"):
        await asyncio.sleep(0)
    log_metric(GraphQueryMetric(query_type="q", duration=1.0, result_count=n))
    with trace.get_tracer("user-code").start_as_current_span("user-span"):
        pass
    return {"n": n}


def make_app(name: str, sink: Path, endpoint: str | None = None) -> tuple[Litestar, ObservabilityPlugin]:
    plugin = ObservabilityPlugin(
        ObservabilityConfig(
            service_name=name,
            environment=f"env-{name}",
            metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
            tracing=TracingConfig(otlp_endpoint=endpoint, shutdown_timeout=3.0),
        )
    )
    return Litestar(route_handlers=[work], plugins=[plugin]), plugin


def labels(sink: Path) -> set[tuple[str, str, str]]:
    return {(line["metric"], line["service"], line["environment"]) for line in read_lines(sink)}


def test_two_apps_at_once_each_write_to_their_own_sink_with_their_own_labels(tmp_path: Path) -> None:
    sink_a, sink_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    app_a, _ = make_app("a", sink_a)
    app_b, _ = make_app("b", sink_b)
    with TestClient(app_a) as client_a, TestClient(app_b) as client_b:
        for n in range(3):
            assert client_a.get(f"/work/{n}").status_code == 200
            assert client_b.get(f"/work/{n + 10}").status_code == 200
    kinds = {"api_latency", "operation_duration", "graph_query_duration"}
    assert labels(sink_a) == {(kind, "a", "env-a") for kind in kinds}
    assert labels(sink_b) == {(kind, "b", "env-b") for kind in kinds}
    assert sorted(line["result_count"] for line in read_lines(sink_a) if "result_count" in line) == [0, 1, 2]
    assert sorted(line["result_count"] for line in read_lines(sink_b) if "result_count" in line) == [10, 11, 12]


@pytest.mark.asyncio
async def test_three_apps_concurrently_in_one_event_loop(tmp_path: Path) -> None:
    sinks = [tmp_path / f"{i}.jsonl" for i in range(3)]
    apps = [make_app(str(i), sink)[0] for i, sink in enumerate(sinks)]
    async with AsyncTestClient(apps[0]) as c0, AsyncTestClient(apps[1]) as c1, AsyncTestClient(apps[2]) as c2:
        clients = [c0, c1, c2]
        responses = await asyncio.gather(*(clients[i % 3].get(f"/work/{i}") for i in range(30)))
    assert [r.status_code for r in responses] == [200] * 30
    for i, sink in enumerate(sinks):
        lines = read_lines(sink)
        assert {line["service"] for line in lines} == {str(i)}
        assert sorted(line["result_count"] for line in lines if "result_count" in line) == list(range(i, 30, 3))


def test_one_app_stopping_leaves_the_other_working(tmp_path: Path) -> None:
    sink_a, sink_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with OtlpHttpReceiver() as receiver:
        app_a, _ = make_app("a", sink_a, receiver.endpoint)
        app_b, plugin_b = make_app("b", sink_b, receiver.endpoint)
        with TestClient(app_b) as client_b:
            with TestClient(app_a) as client_a:
                client_a.get("/work/1")
            # a has shut down: b still writes its lines, spans (its own and user code's) and operations
            client_b.get("/work/2")
            provider = plugin_b.tracer_provider
            assert provider is not None
            provider.force_flush(5000)
        spans = receiver.spans()
    assert [line["metric"] for line in read_lines(sink_b)] == [
        "operation_duration",
        "graph_query_duration",
        "api_latency",
    ]
    by_service: dict[str, set[str]] = {}
    for span in spans:
        by_service.setdefault(str(span.resource_attributes["service.name"]), set()).add(span.name)
    assert by_service == {
        "a": {"GET /work/{n}", "work", "user-span"},
        "b": {"GET /work/{n}", "work", "user-span"},
    }


def test_an_app_started_after_another_stopped_starts_fresh(tmp_path: Path, obs_log: list[logging.LogRecord]) -> None:
    with OtlpHttpReceiver() as receiver:
        for name in ("first", "second", "third"):
            app, _ = make_app(name, tmp_path / f"{name}.jsonl", receiver.endpoint)
            with serve(app) as url:
                assert httpx.get(url + "/work/1").status_code == 200
        spans = receiver.spans()
    services = sorted({str(s.resource_attributes["service.name"]) for s in spans if s.name == "GET /work/{n}"})
    assert services == ["first", "second", "third"]
    user_spans = sorted(str(s.resource_attributes["service.name"]) for s in spans if s.name == "user-span")
    assert user_spans == ["first", "second", "third"]  # user code's tracer follows the running app
    assert not any("own OpenTelemetry TracerProvider" in r.getMessage() for r in obs_log)
    for name in ("first", "second", "third"):
        assert {line["service"] for line in read_lines(tmp_path / f"{name}.jsonl")} == {name}


def test_log_filters_and_record_factories_do_not_pile_up(tmp_path: Path) -> None:
    factory = logging.getLogRecordFactory()
    exporter_logger = logging.getLogger("opentelemetry.sdk._shared_internal")
    filters = list(exporter_logger.filters)
    for i in range(3):
        app, _ = make_app(str(i), tmp_path / f"{i}.jsonl")
        with TestClient(app) as client:
            client.get("/work/1")
            assert logging.getLogRecordFactory() is not factory  # trace ids are added while an app runs
    assert logging.getLogRecordFactory() is factory
    assert exporter_logger.filters == filters
