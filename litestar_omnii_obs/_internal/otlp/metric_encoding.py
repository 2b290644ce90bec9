"""OTLP metric request encoding: ``MetricsData`` straight to ``ExportMetricsServiceRequest`` wire bytes.

Why: the SDK's OTLP metric exporters import protobuf and the generated message classes, and over
gRPC the whole SDK exporter stack: a few MiB and about 70 ms at start-up, for one small request per
export interval. This writes the same request with the wire helpers of the span encoder
(:mod:`.encoding`). Metrics are encoded once per interval, so speed does not matter here; equality
with the SDK's ``encode_metrics`` does: the test suite checks it, message for message, over every
instrument kind, value type, temporality, exemplars and scopes. Fields are written in number order,
as protobuf does; a field the SDK leaves unset is left out.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    NumberDataPoint,
    Sum,
)

from litestar_omnii_obs._internal.otlp.encoding import (
    _attributes,
    _field,
    _pack_double,
    _pack_fixed64,
    _scope_parts,
    _text,
    _uint,
    _varint,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import Exemplar
    from opentelemetry.sdk.metrics.export import Buckets, Metric, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["encode_metrics"]

_logger = logging.getLogger(__name__)
_pack_sfixed64 = struct.Struct("<q").pack  # ``as_int``; out of int64 range raises, as protobuf does


def _sint(number: int, value: int) -> bytes:
    """A ``sint32`` field, zigzag encoded."""
    return _uint(number, value << 1 if value >= 0 else (-value << 1) - 1)


def _fixed64(number: int, value: int) -> bytes:
    return _varint(number << 3 | 1) + _pack_fixed64(value) if value else b""


def _double(number: int, value: float | None) -> bytes:
    """An ``optional double``: written whenever set, zero included (explicit presence)."""
    return b"" if value is None else _varint(number << 3 | 1) + _pack_double(value)


def _packed(number: int, kind: str, values: Sequence[Any]) -> bytes:
    """A packed repeated fixed-width field: ``kind`` ``Q`` (fixed64) or ``d`` (double)."""
    return _field(number, struct.pack(f"<{len(values)}{kind}", *values)) if values else b""


def _attrs(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Attributes, skipping (and logging) one with a value OTLP cannot carry, as the SDK does."""
    try:
        return _attributes(number, attributes)
    except TypeError:
        parts = []
        for key, value in (attributes or {}).items():
            try:
                parts.append(_attributes(number, {key: value}))
            except TypeError as error:
                _logger.exception("Failed to encode key %s: %s", key, error)
        return b"".join(parts)


def _exemplars(number: int, exemplars: Sequence[Exemplar]) -> bytes:
    parts = []
    for exemplar in exemplars:
        value = exemplar.value
        if not isinstance(value, int | float):
            raise ValueError("Exemplar value must be an int or float")
        is_double = isinstance(value, float)  # the SDK checks float first: a bool is an ``as_int``
        body = _fixed64(2, exemplar.time_unix_nano) + (b"\x19" + _pack_double(value) if is_double else b"")
        if exemplar.span_id is not None and exemplar.trace_id is not None:
            body += _field(4, exemplar.span_id.to_bytes(8, "big")) + _field(5, exemplar.trace_id.to_bytes(16, "big"))
        body += (b"" if is_double else b"\x31" + _pack_sfixed64(value)) + _attrs(7, exemplar.filtered_attributes)
        parts.append(_field(number, body))
    return b"".join(parts)


def _number_point(point: NumberDataPoint, start: bool) -> bytes:
    """A ``NumberDataPoint``; a gauge's has no start time (the SDK leaves it out)."""
    value = point.value
    is_int = isinstance(value, int)  # the SDK checks int first: a bool is an ``as_int``
    return b"".join(
        (
            _fixed64(2, point.start_time_unix_nano) if start else b"",
            _fixed64(3, point.time_unix_nano),
            b"" if is_int else b"\x21" + _pack_double(value),
            _exemplars(5, point.exemplars),
            b"\x31" + _pack_sfixed64(value) if is_int else b"",
            _attrs(7, point.attributes),
        )
    )


def _histogram_point(point: HistogramDataPoint) -> bytes:
    return b"".join(
        (
            _fixed64(2, point.start_time_unix_nano),
            _fixed64(3, point.time_unix_nano),
            _fixed64(4, point.count),
            _double(5, point.sum),
            _packed(6, "Q", point.bucket_counts),
            _packed(7, "d", point.explicit_bounds),
            _exemplars(8, point.exemplars),
            _attrs(9, point.attributes),
            _double(11, point.min),
            _double(12, point.max),
        )
    )


def _buckets(number: int, buckets: Buckets) -> bytes:
    """``positive``/``negative``: left out without counts, as the SDK does; counts packed varints."""
    counts = buckets.bucket_counts
    if not counts:
        return b""
    return _field(number, _sint(1, buckets.offset) + _field(2, b"".join(_varint(count) for count in counts)))


def _exponential_point(point: ExponentialHistogramDataPoint) -> bytes:
    """An ``ExponentialHistogramDataPoint``; ``zero_threshold`` is not set, as by the SDK."""
    return b"".join(
        (
            _attrs(1, point.attributes),
            _fixed64(2, point.start_time_unix_nano),
            _fixed64(3, point.time_unix_nano),
            _fixed64(4, point.count),
            _double(5, point.sum),
            _sint(6, point.scale),
            _fixed64(7, point.zero_count),
            _buckets(8, point.positive),
            _buckets(9, point.negative),
            _uint(10, point.flags),
            _exemplars(11, point.exemplars),
            _double(12, point.min),
            _double(13, point.max),
        )
    )


def _metric(metric: Metric) -> bytes:
    """A ``Metric``; its data field only with data points (the SDK sets it while adding them)."""
    body = _text(1, metric.name) + _text(2, metric.description or "") + _text(3, metric.unit or "")
    data = metric.data
    if isinstance(data, Gauge):
        points = b"".join(_field(1, _number_point(point, start=False)) for point in data.data_points)
        body += _field(5, points) if points else b""
    elif isinstance(data, Sum):
        points = b"".join(_field(1, _number_point(point, start=True)) for point in data.data_points)
        tail = _uint(2, data.aggregation_temporality) + _uint(3, data.is_monotonic)
        body += _field(7, points + tail) if points else b""
    elif isinstance(data, Histogram):
        points = b"".join(_field(1, _histogram_point(point)) for point in data.data_points)
        body += _field(9, points + _uint(2, data.aggregation_temporality)) if points else b""
    elif isinstance(data, ExponentialHistogram):
        points = b"".join(_field(1, _exponential_point(point)) for point in data.data_points)
        body += _field(10, points + _uint(2, data.aggregation_temporality)) if points else b""
    else:
        _logger.warning("unsupported data type %s", data.__class__.__name__)
    return _field(2, body)


def encode_metrics(data: MetricsData) -> bytes:
    """``ExportMetricsServiceRequest`` wire bytes for ``data``, as the SDK's ``encode_metrics`` gives them.

    Grouped as the SDK groups them: by equal resource, then by equal scope (name, version, schema URL, attributes);
    a later equal group replaces an earlier one's content in its place, as in the SDK's dicts.
    """
    resources: dict[Resource, dict[InstrumentationScope, bytes]] = {}
    for resource_metrics in data.resource_metrics:
        scopes = resources[resource_metrics.resource] = {}
        for scope_metrics in resource_metrics.scope_metrics:
            head, tail = _scope_parts(scope_metrics.scope)
            metrics = b"".join(_metric(metric) for metric in scope_metrics.metrics)
            scopes[scope_metrics.scope] = _field(2, head + metrics + tail)
    return b"".join(
        _field(
            1,
            _field(1, _attributes(1, resource.attributes)) + b"".join(scopes.values()) + _text(3, resource.schema_url),
        )
        for resource, scopes in resources.items()
    )
