"""Our OTLP metric encoder produces exactly the request the SDK's ``encode_metrics`` produces."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics as sdk_encode
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import (
    AlwaysOnExemplarFilter,
    Counter,
    Exemplar,
    Histogram,
    MeterProvider,
    ObservableCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from opentelemetry.util.types import Attributes

from litestar_omnii_obs._internal.otlp.metric_encoding import encode_metrics

ATTRIBUTES: Attributes = {
    "s": "GET",
    "unicode": "héllo ✓",
    "empty": "",
    "i": 7,
    "neg": -3,
    "big": 2**62,
    "f": 0.5,
    "b": True,
    "no": False,
    "strs": ("a", "b"),
    "ints": (1, -2),
    "floats": (1.5, -0.0),
    "bools": (True, False),
}
DELTA: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
}
SAMPLED = set_span_in_context(
    NonRecordingSpan(
        SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
)


def assert_same(data: MetricsData) -> None:
    ours = encode_metrics(data)
    assert ExportMetricsServiceRequest.FromString(ours) == sdk_encode(data)


def observe(values: Iterable[int | float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, {"i": i, "kind": "obs"}) for i, value in enumerate(values)]

    return callback


def collected(delta: bool, exemplars: bool) -> list[MetricsData]:
    """Two collections of every instrument kind from a real ``MeterProvider``."""
    reader = InMemoryMetricReader(preferred_temporality=DELTA if delta else None)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource({"service.name": "svc", "n": 1, "f": 1.5, "ok": True}, schema_url="https://x/res"),
        views=[
            View(instrument_name="latency", aggregation=ExplicitBucketHistogramAggregation((0, 0.5, 1, 10))),
            View(instrument_name="exp*", aggregation=ExponentialBucketHistogramAggregation(max_size=20)),
            View(instrument_name="*"),
        ],
        exemplar_filter=AlwaysOnExemplarFilter() if exemplars else None,
    )
    first = provider.get_meter("scope.one", "1.2.3", schema_url="https://x/scope", attributes={"a": 1, "t": ("x",)})
    second = provider.get_meter("scope.two")
    requests = first.create_counter("requests", unit="{request}", description="Requests served")
    floats = first.create_counter("bytes")
    active = first.create_up_down_counter("active")
    latency = first.create_histogram("latency", unit="s")
    exp = second.create_histogram("exp.latency", unit="ms")
    exp_signed = second.create_up_down_counter("exp.signed")
    gauge = second.create_gauge("temperature")
    second.create_observable_gauge("load", [observe([1, -2, 0])])
    second.create_observable_gauge("ratio", [observe([0.25, -1.5, 0.0])])
    second.create_observable_counter("cpu", [observe([3, 4.5])])
    second.create_observable_up_down_counter("queue", [observe([-7])])
    provider.get_meter("scope.empty", "0.1")  # a meter without instruments
    out = []
    for round_ in range(2):
        requests.add(1, ATTRIBUTES)
        requests.add(2, {"route": "/a"}, context=SAMPLED)
        requests.add(0)
        floats.add(1.25, {"route": "/a"}, context=SAMPLED)
        active.add(3 + round_)
        active.add(-10, {"route": "/b"})
        active.add(-0.5, {"float": True})
        for value in (0, 0.2, 0.7, 3, 50.5):
            latency.record(value, {"route": "/a"}, context=SAMPLED)
        latency.record(2, ATTRIBUTES)
        for value in (0, 1, 2, 3.5, 1000, 1e-9):
            exp.record(value, {"route": "/a"}, context=SAMPLED)
        exp.record(7)
        for value in (-5, -0.25, 0, 4, -1000):
            exp_signed.add(value, context=SAMPLED)
        gauge.set(21.5, {"room": "a"}, context=SAMPLED)
        gauge.set(-4, {"room": "b"})
        data = reader.get_metrics_data()
        assert data is not None
        out.append(data)
    provider.shutdown()
    return out


@pytest.mark.parametrize("exemplars", [False, True], ids=["trace-based-exemplars", "always-on-exemplars"])
@pytest.mark.parametrize("delta", [False, True], ids=["cumulative", "delta"])
def test_real_collections_encode_as_the_sdk_encodes_them(delta: bool, exemplars: bool) -> None:
    for data in collected(delta, exemplars):
        request = sdk_encode(data)
        kinds = {m.WhichOneof("data") for s in request.resource_metrics[0].scope_metrics for m in s.metrics}
        assert kinds == {"sum", "gauge", "histogram", "exponential_histogram"}
        points = [p for s in request.resource_metrics[0].scope_metrics for m in s.metrics for p in m.sum.data_points]
        assert any(p.exemplars and p.exemplars[0].trace_id for p in points)
        assert_same(data)
        assert encode_metrics(data) == request.SerializeToString()  # byte for byte, too: no field twice


def test_several_resources_together() -> None:
    cumulative, delta = collected(False, False)[1], collected(True, True)[0]
    other = ResourceMetrics(Resource({"service.name": "other"}), cumulative.resource_metrics[0].scope_metrics, "")
    assert_same(MetricsData([*cumulative.resource_metrics, other, *delta.resource_metrics]))


def test_empty_metrics_data() -> None:
    assert encode_metrics(MetricsData([])) == b""
    assert_same(MetricsData([]))
    assert_same(MetricsData([ResourceMetrics(Resource({}), [], "")]))


def point(value: int | float, **kwargs: object) -> NumberDataPoint:
    return NumberDataPoint(attributes=kwargs or None, start_time_unix_nano=3, time_unix_nano=5, value=value)  # type: ignore[arg-type]


def test_edge_cases_the_sdk_does_not_produce() -> None:
    """Unset and zero fields, empty data, duplicate groups, odd exemplars and attributes, unknown data."""
    exemplars = [
        Exemplar({"x": 1}, 2.5, 9),
        Exemplar({}, 4, 0, span_id=0, trace_id=None),
        Exemplar(None, -3, 1, span_id=0, trace_id=0),
    ]
    histogram = HistogramDataPoint(None, 1, 2, 0, 0, [], [], None, None, exemplars)  # type: ignore[arg-type]
    histogram_set = HistogramDataPoint({"k": "v"}, 0, 2, 3, -1.5, [1, 2], [0.0], float("-inf"), float("inf"))
    exponential = [
        ExponentialHistogramDataPoint(None, 0, 0, 0, None, 0, 0, Buckets(0, []), Buckets(-3, [0]), 0, None, None),  # type: ignore[arg-type]
        ExponentialHistogramDataPoint({}, 1, 2, 5, 0.0, -10, 1, Buckets(-2, [2**40]), Buckets(4, []), 1, 0.0, -0.0),
    ]
    metrics = [
        Metric("g", None, None, Gauge([point(0), point(0.0), point(-(2**63)), point(1e308, s=b"\x00")])),
        Metric("s", "", "", Sum([point(1, bad={1, 2}, good="y")], AggregationTemporality.UNSPECIFIED, False)),
        Metric("empty.sum", "d", "u", Sum([], AggregationTemporality.DELTA, True)),
        Metric("empty.gauge", "", "", Gauge([])),
        Metric("h", "", "", HistogramData([histogram, histogram_set], AggregationTemporality.CUMULATIVE)),
        Metric("e", "", "", ExponentialHistogram(exponential, AggregationTemporality.DELTA)),
        Metric("", "", "", object()),  # type: ignore[arg-type]
    ]
    scope = InstrumentationScope("dup", "1", "https://s", {"a": 1})
    same_scope = InstrumentationScope("dup", "1", "https://s", {"a": 1})
    other_scope = InstrumentationScope("dup", "1", "https://s", {"a": 2})
    resource = Resource({"r": 1}, "https://r")
    # An equal resource, or an equal scope under one resource, replaces the earlier one's
    # content where the earlier one stood: the SDK's dicts do so.
    data = MetricsData(
        [
            ResourceMetrics(resource, [ScopeMetrics(InstrumentationScope("lost"), metrics[4:], "")], ""),
            ResourceMetrics(Resource({}), [ScopeMetrics(InstrumentationScope(""), metrics[2:], "")], ""),
            ResourceMetrics(
                Resource({"r": 1}, "https://r"),
                [
                    ScopeMetrics(scope, metrics[:3], ""),
                    ScopeMetrics(other_scope, metrics, ""),
                    ScopeMetrics(same_scope, metrics, ""),
                ],
                "",
            ),
        ]
    )
    logging.disable(logging.CRITICAL)
    try:
        request = sdk_encode(data)
        assert [len(s.metrics) for r in request.resource_metrics for s in r.scope_metrics] == [7, 7, 5]
        assert_same(data)
    finally:
        logging.disable(logging.NOTSET)
