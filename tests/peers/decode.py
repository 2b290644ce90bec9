"""OTLP request bodies decoded into flat, plain-python records: what every test peer that receives OTLP reports.

:func:`decode_spans` and :func:`decode_metrics` take the protobuf request messages (gRPC hands
them decoded; HTTP peers parse the body with ``FromString`` first) and return
:class:`ReceivedSpan` / :class:`MetricPoint` records with hex ids and lower-case names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "MetricPoint",
    "ReceivedSpan",
    "Signal",
    "SpanEvent",
    "SpanLink",
    "decode_any_value",
    "decode_attributes",
    "decode_metrics",
    "decode_spans",
]

Signal = Literal["traces", "metrics"]

#: Proto ``Span.SpanKind`` -> lower-case name (matches ``opentelemetry.trace.SpanKind.X.name.lower()``).
SPAN_KINDS: dict[int, str] = {
    trace_pb2.Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
}
#: Proto ``Status.StatusCode`` -> lower-case name (matches ``opentelemetry.trace.StatusCode.X.name.lower()``).
STATUS_CODES: dict[int, str] = {
    trace_pb2.Status.STATUS_CODE_UNSET: "unset",
    trace_pb2.Status.STATUS_CODE_OK: "ok",
    trace_pb2.Status.STATUS_CODE_ERROR: "error",
}
TEMPORALITIES: dict[int, str] = {
    metrics_pb2.AGGREGATION_TEMPORALITY_UNSPECIFIED: "unspecified",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}


# --------------------------------------------------------------------------- decoded records


@dataclass(frozen=True)
class SpanEvent:
    name: str
    attributes: dict[str, Any]
    time_unix_nano: int


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector saw it; ids are lower-case hex, ``kind``/``status_code`` lower-case names."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    status_code: str
    status_message: str
    events: tuple[SpanEvent, ...]
    links: tuple[SpanLink, ...]
    resource_attributes: dict[str, Any]
    scope_name: str
    scope_version: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    trace_state: str
    accepted: bool

    def event_names(self) -> list[str]:
        return [event.name for event in self.events]


@dataclass(frozen=True)
class MetricPoint:
    """One data point of one metric, flattened.

    ``kind`` is ``gauge``, ``sum``, ``histogram``, ``exponential_histogram`` or ``summary``. Gauges and sums
    carry ``value``; histogram kinds carry ``count``/``sum`` (and ``min``/``max``/buckets when sent);
    summaries carry ``count``/``sum``.
    """

    name: str
    kind: str
    attributes: dict[str, Any]
    value: int | float | None
    count: int | None
    sum: float | None
    min: float | None
    max: float | None
    bucket_counts: tuple[int, ...]
    explicit_bounds: tuple[float, ...]
    unit: str
    description: str
    is_monotonic: bool | None
    temporality: str | None
    resource_attributes: dict[str, Any]
    scope_name: str
    time_unix_nano: int
    accepted: bool


# --------------------------------------------------------------------------- decoding


def decode_any_value(value: AnyValue) -> Any:
    """``AnyValue`` -> str / bool / int / float / bytes / list / dict / None."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(attributes: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: decode_any_value(kv.value) for kv in attributes}


def _hex_or_none(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


def decode_spans(request: trace_service_pb2.ExportTraceServiceRequest, accepted: bool) -> list[ReceivedSpan]:
    """Every span of an ``ExportTraceServiceRequest``; ``accepted``: how the peer answered it."""
    out: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource_attributes = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=_hex_or_none(span.parent_span_id),
                        attributes=decode_attributes(span.attributes),
                        status_code=STATUS_CODES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        events=tuple(
                            SpanEvent(e.name, decode_attributes(e.attributes), e.time_unix_nano) for e in span.events
                        ),
                        links=tuple(
                            SpanLink(link.trace_id.hex(), link.span_id.hex(), decode_attributes(link.attributes))
                            for link in span.links
                        ),
                        resource_attributes=dict(resource_attributes),
                        scope_name=scope_spans.scope.name,
                        scope_version=scope_spans.scope.version,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        trace_state=span.trace_state,
                        accepted=accepted,
                    )
                )
    return out


def _number_value(point: metrics_pb2.NumberDataPoint) -> int | float | None:
    which = point.WhichOneof("value")
    return None if which is None else getattr(point, which)


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _decode_metric(metric: metrics_pb2.Metric, common: dict[str, Any]) -> list[MetricPoint]:
    kind = metric.WhichOneof("data")
    base: dict[str, Any] = {
        "name": metric.name,
        "kind": kind or "empty",
        "unit": metric.unit,
        "description": metric.description,
        "value": None,
        "count": None,
        "sum": None,
        "min": None,
        "max": None,
        "bucket_counts": (),
        "explicit_bounds": (),
        "is_monotonic": None,
        "temporality": None,
        **common,
    }
    points: list[MetricPoint] = []
    if kind in ("gauge", "sum"):
        data = getattr(metric, kind)
        if kind == "sum":
            base["is_monotonic"] = data.is_monotonic
            base["temporality"] = TEMPORALITIES.get(data.aggregation_temporality)
        for p in data.data_points:
            fields = {"attributes": decode_attributes(p.attributes), "time_unix_nano": p.time_unix_nano}
            points.append(MetricPoint(**{**base, **fields, "value": _number_value(p)}))
    elif kind == "histogram":
        base["temporality"] = TEMPORALITIES.get(metric.histogram.aggregation_temporality)
        for h in metric.histogram.data_points:
            fields = {
                "attributes": decode_attributes(h.attributes),
                "time_unix_nano": h.time_unix_nano,
                "count": h.count,
                "sum": _optional(h, "sum"),
                "min": _optional(h, "min"),
                "max": _optional(h, "max"),
                "bucket_counts": tuple(h.bucket_counts),
                "explicit_bounds": tuple(h.explicit_bounds),
            }
            points.append(MetricPoint(**{**base, **fields}))
    elif kind == "exponential_histogram":
        base["temporality"] = TEMPORALITIES.get(metric.exponential_histogram.aggregation_temporality)
        for e in metric.exponential_histogram.data_points:
            fields = {
                "attributes": decode_attributes(e.attributes),
                "time_unix_nano": e.time_unix_nano,
                "count": e.count,
                "sum": _optional(e, "sum"),
                "min": _optional(e, "min"),
                "max": _optional(e, "max"),
            }
            points.append(MetricPoint(**{**base, **fields}))
    elif kind == "summary":
        for s in metric.summary.data_points:
            fields = {
                "attributes": decode_attributes(s.attributes),
                "time_unix_nano": s.time_unix_nano,
                "count": s.count,
                "sum": s.sum,
            }
            points.append(MetricPoint(**{**base, **fields}))
    return points


def decode_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest, accepted: bool) -> list[MetricPoint]:
    """Every data point of an ``ExportMetricsServiceRequest``, flattened; ``accepted``: how the peer answered it."""
    out: list[MetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource_attributes = decode_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            common = {
                "resource_attributes": resource_attributes,
                "scope_name": scope_metrics.scope.name,
                "accepted": accepted,
            }
            for metric in scope_metrics.metrics:
                out.extend(_decode_metric(metric, common))
    return out
