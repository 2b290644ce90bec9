"""``http.server.request.duration`` series: capped like the SDK's cardinality limit, nothing lost past the cap.

Unit level: :class:`~litestar_omnii_obs._internal.durations.RequestDurations` is fed attribute sets directly, and its
snapshot is read the way the OTLP exporter reads it (``metric()``, then the OTLP encoder). One test drives a
real app in-process (Litestar's ``TestClient``) to check which ``error.type`` a failing request's point gets.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Response, get
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.testing import TestClient
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as SdkHistogram
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from litestar_omnii_obs import MetricsConfig, ObservabilityConfig, ObservabilityPlugin, TracingConfig
from litestar_omnii_obs._internal.durations import HTTP_DURATION_BUCKETS, RequestDurations
from litestar_omnii_obs._internal.otlp.metrics import build_metric_exporter
from tests.peers.otlp_http_receiver import OtlpHttpReceiver

OVERFLOW = {"otel.metric.overflow": True}


def points_of(durations: RequestDurations) -> list[HistogramDataPoint]:
    metric = durations.metric()
    assert metric is not None
    assert metric.name == "http.server.request.duration"
    assert isinstance(metric.data, SdkHistogram)
    return list(metric.data.data_points)


def attributes(point: HistogramDataPoint) -> dict[str, Any]:
    return dict(point.attributes or {})


def overflow_points(points: list[HistogramDataPoint]) -> list[HistogramDataPoint]:
    return [p for p in points if attributes(p) == OVERFLOW]


def check_point_is_consistent(point: HistogramDataPoint) -> None:
    assert sum(point.bucket_counts) == point.count
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
    assert point.min <= point.sum / point.count <= point.max


def test_no_point_before_the_first_request() -> None:
    assert RequestDurations().metric() is None


@pytest.mark.parametrize("max_series", [1, 5, 50])
def test_attribute_sets_beyond_the_cap_go_to_one_overflow_series(max_series: int) -> None:
    durations = RequestDurations(max_series=max_series)
    # Twice the cap plus some distinct routes (a client choosing routes would do this), three requests each.
    recorded: list[float] = []
    distinct = 2 * max_series + 7
    for repeat in range(3):
        for i in range(distinct):
            seconds = 0.001 * (i + 1) + repeat * 0.0001
            durations.record(seconds, "GET", f"/route-{i}", 200, "http", None)
            recorded.append(seconds)

    points = points_of(durations)
    [overflow] = overflow_points(points)
    regular = [p for p in points if p is not overflow]
    assert len(regular) == max_series
    assert len(points) == max_series + 1
    # The first ``max_series`` attribute sets keep their own series, with all their requests.
    assert sorted(attributes(p)["http.route"] for p in regular) == sorted(f"/route-{i}" for i in range(max_series))
    assert all(p.count == 3 for p in regular)
    # Every other request is counted in the overflow series: nothing is lost.
    assert overflow.count == 3 * (distinct - max_series)
    assert sum(p.count for p in points) == len(recorded)
    assert sum(p.sum for p in points) == pytest.approx(sum(recorded))
    assert overflow.min == pytest.approx(0.001 * (max_series + 1))
    assert overflow.max == pytest.approx(0.001 * distinct + 0.0002)
    for point in points:
        check_point_is_consistent(point)
        assert tuple(point.explicit_bounds) == HTTP_DURATION_BUCKETS


def test_the_overflow_series_never_grows_and_capped_series_keep_counting() -> None:
    durations = RequestDurations(max_series=3)
    for i in range(3):
        durations.record(0.01, "GET", f"/kept-{i}", 200, "http", None)
    for export in range(1, 4):
        for i in range(100):  # each export window brings 100 new attribute sets
            durations.record(0.02, "POST", f"/new-{export}-{i}", 201, "https", None)
        durations.record(0.03, "GET", "/kept-0", 200, "http", None)  # an existing series stays itself
        points = points_of(durations)
        assert len(points) == 4
        [overflow] = overflow_points(points)
        assert overflow.count == 100 * export  # cumulative, like the SDK's points
        kept = {attributes(p)["http.route"]: p.count for p in points if p is not overflow}
        assert kept == {"/kept-0": 1 + export, "/kept-1": 1, "/kept-2": 1}


def test_each_label_counts_towards_the_cap() -> None:
    """Method, status, scheme and error type make distinct series just like the route does."""
    durations = RequestDurations(max_series=4)
    durations.record(0.01, "GET", "/a", 200, "http", None)
    durations.record(0.01, "POST", "/a", 200, "http", None)
    durations.record(0.01, "GET", "/a", 500, "http", "RuntimeError")
    durations.record(0.01, "GET", "/a", 200, "https", None)
    durations.record(0.01, "GET", "/a", 500, "http", "ValueError")  # a fifth set: overflow
    points = points_of(durations)
    assert len(points) == 5
    [overflow] = overflow_points(points)
    assert overflow.count == 1


def test_concurrent_recording_loses_nothing_and_respects_the_cap() -> None:
    durations = RequestDurations(max_series=20)
    per_thread, threads = 5000, 4

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_thread):
            durations.record(rng.random() / 10, "GET", f"/r/{rng.randrange(200)}", 200, "http", None)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    points = points_of(durations)
    assert len(points) == 21
    assert len(overflow_points(points)) == 1
    assert sum(p.count for p in points) == per_thread * threads
    for point in points:
        check_point_is_consistent(point)


def test_failure_points_carry_url_scheme_and_error_type() -> None:
    durations = RequestDurations()
    durations.record(0.2, "GET", "/boom", 500, "https", "RuntimeError")
    durations.record(0.1, "POST", "/pay", 502, "http", "502")
    durations.record(0.01, "GET", "/users/{user_id}", 404, "http", None)
    by_status = {attributes(p)["http.response.status_code"]: attributes(p) for p in points_of(durations)}
    assert by_status[500] == {
        "http.request.method": "GET",
        "http.route": "/boom",
        "http.response.status_code": 500,
        "url.scheme": "https",
        "error.type": "RuntimeError",
    }
    assert by_status[502]["error.type"] == "502"
    assert by_status[502]["url.scheme"] == "http"
    assert "error.type" not in by_status[404]
    assert by_status[404]["url.scheme"] == "http"


def _sdk_data(resource: Resource) -> MetricsData:
    """What the SDK's reader hands over: one resource, another scope's metric already in it."""
    other = Metric(
        name="omnii.operation.duration",
        description="",
        unit="s",
        data=SdkHistogram(data_points=[], aggregation_temporality=AggregationTemporality.CUMULATIVE),
    )
    scope = ScopeMetrics(scope=InstrumentationScope("someone.else"), metrics=[other], schema_url="")
    return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])


def test_the_overflow_series_reaches_the_collector_with_a_boolean_attribute() -> None:
    durations = RequestDurations(max_series=2)
    for i in range(10):
        durations.record(0.01, "GET", f"/r/{i}", 200, "http", None)
    with OtlpHttpReceiver() as collector:
        exporter = build_metric_exporter(collector.endpoint, durations=durations)
        resource = Resource.create({"service.name": "svc"})
        assert exporter.export(_sdk_data(resource)) is MetricExportResult.SUCCESS
        exporter.shutdown()
        points = collector.metric_points("http.server.request.duration")
    assert (exporter.health.delivered_count, exporter.health.dropped) == (1, 0)
    assert len(points) == 3
    [overflow] = [p for p in points if "otel.metric.overflow" in p.attributes]
    assert overflow.attributes["otel.metric.overflow"] is True
    assert overflow.count == 8
    assert sum(p.count or 0 for p in points) == 10


# --------------------------------------------------------------------------- a real app, in-process


@get("/crash")
async def crash() -> None:
    raise RuntimeError("crash")


@get("/unavailable")
async def unavailable() -> None:
    raise ServiceUnavailableException("down for maintenance")


@get("/bad-gateway")
async def bad_gateway() -> Response[str]:
    return Response("upstream said no", status_code=502)


@get("/missing")
async def missing() -> None:
    raise NotFoundException("no such thing")


@get("/ok")
async def ok() -> str:
    return "ok"


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


def test_a_failing_request_s_point_has_error_type_and_url_scheme(receiver: OtlpHttpReceiver, tmp_path: Path) -> None:
    config = ObservabilityConfig(
        metrics=MetricsConfig(sink=str(tmp_path / "m.jsonl")),
        tracing=TracingConfig(otlp_endpoint=receiver.endpoint, shutdown_timeout=10.0),
    )
    app = Litestar(route_handlers=[crash, unavailable, bad_gateway, missing, ok], plugins=[ObservabilityPlugin(config)])
    with TestClient(app, base_url="https://testserver.local") as client:
        statuses = [
            client.get(path).status_code for path in ("/crash", "/unavailable", "/bad-gateway", "/missing", "/ok")
        ]
    assert statuses == [500, 503, 502, 404, 200]
    points = receiver.wait_for_metric("http.server.request.duration", timeout=10)
    by_route = {p.attributes["http.route"]: p.attributes for p in points}
    assert by_route["/crash"]["error.type"] == "RuntimeError"
    # The fully-qualified class name, as exception.type carries it (a built-in type keeps its bare name).
    assert by_route["/unavailable"]["error.type"] == "litestar.exceptions.http_exceptions.ServiceUnavailableException"
    assert by_route["/bad-gateway"]["error.type"] == "502"  # no exception: the status code, as the conventions say
    assert "error.type" not in by_route["/missing"]
    assert "error.type" not in by_route["/ok"]
    assert {a["url.scheme"] for a in by_route.values()} == {"https"}


def _folders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "omnii-obs-durations"]


def _wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_requests_are_folded_in_the_background_and_the_folder_ends_with_its_durations() -> None:
    before = set(_folders())
    durations = RequestDurations(fold_interval=0.01)
    durations.record(0.02, "GET", "/a", 200, "http", None)
    [folder] = set(_folders()) - before
    assert _wait_until(lambda: not durations._pending)  # folded without anyone asking for a snapshot
    [point] = points_of(durations)
    assert (point.count, point.sum) == (1, 0.02)
    durations.close()
    assert _wait_until(lambda: not folder.is_alive())
    orphan = RequestDurations(fold_interval=0.01)  # never closed: its thread must not outlive it
    orphan.record(0.01, "GET", "/b", 200, "http", None)
    [orphan_folder] = set(_folders()) - before
    del orphan
    gc.collect()
    assert _wait_until(lambda: not orphan_folder.is_alive())
