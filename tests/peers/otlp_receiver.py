"""A real OTLP/gRPC collector stand-in: serves the trace and metrics ``Export`` RPCs on 127.0.0.1.

It speaks the wire protocol the OpenTelemetry OTLP gRPC exporters speak (the generated
``opentelemetry.proto`` services on a real grpcio server), decodes what it receives into flat,
plain-python records and can be told to answer with a gRPC error status to exercise exporter
failure paths. Everything is thread-safe; the wait helpers never assert on wall-clock time.

Typical use::

    with OtlpReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)
        ...
        spans = receiver.wait_for_spans(2)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "ExportRequest",
    "MetricPoint",
    "OtlpReceiver",
    "ReceivedSpan",
    "SpanEvent",
    "SpanLink",
    "decode_any_value",
    "decode_attributes",
]

T = TypeVar("T")
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


@dataclass(frozen=True)
class ExportRequest:
    """One ``Export`` RPC: which signal, its metadata, how many spans/points it held and how it was answered."""

    signal: Signal
    metadata: dict[str, str | bytes]
    item_count: int
    accepted: bool
    status_code: grpc.StatusCode


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


def _decode_spans(request: trace_service_pb2.ExportTraceServiceRequest, accepted: bool) -> list[ReceivedSpan]:
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


def _decode_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest, accepted: bool) -> list[MetricPoint]:
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


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class _Failure:
    code: grpc.StatusCode
    details: str
    retry_delay: float | None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._handle("traces", request, context)
        refusal = self._receiver.refusal
        if refusal is None:
            return trace_service_pb2.ExportTraceServiceResponse()
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        partial = trace_service_pb2.ExportTracePartialSuccess(rejected_spans=spans, error_message=refusal)
        return trace_service_pb2.ExportTraceServiceResponse(partial_success=partial)


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver._handle("metrics", request, context)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC trace + metrics collector on ``127.0.0.1``.

    ``port=None`` binds a free port on the first :meth:`start`; later starts (after :meth:`stop`) rebind the
    same port, so a test can simulate a collector restart. Recorded data survives a restart (use :meth:`clear`).

    ``error_code`` (or :meth:`fail_with` at runtime) makes every ``Export`` answer with that gRPC status; such
    requests are still counted and decoded, but their spans/points are flagged ``accepted=False`` and hidden from
    :meth:`spans`/:meth:`metric_points` unless ``include_rejected=True``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        error_code: grpc.StatusCode | None = None,
        error_details: str = "injected failure",
        max_workers: int = 4,
    ) -> None:
        self._requested_port = port or 0
        self._bound_port: int | None = None
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._lifecycle = threading.Lock()
        self._cond = threading.Condition()
        self._generation = 0
        self._spans: list[ReceivedSpan] = []
        self._points: list[MetricPoint] = []
        self._requests: list[ExportRequest] = []
        self._failure: _Failure | None = None
        self._failures_left: int | None = None
        #: When set, trace exports are accepted but answered with a partial success refusing every span, with
        #: this message (spans are still recorded, as a collector that dropped them after decoding would).
        self.refusal: str | None = None
        if error_code is not None:
            self.fail_with(error_code, details=error_details)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Self:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("OtlpReceiver already started")
            pool = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="otlp-receiver")
            server = grpc.server(
                pool,
                # Never share the port silently with another process (gRPC enables SO_REUSEPORT by default).
                options=[("grpc.so_reuseport", 0)],
            )
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)
            want = self._bound_port if self._bound_port is not None else self._requested_port
            try:
                bound = server.add_insecure_port(f"127.0.0.1:{want}")
            except RuntimeError as exc:  # newer grpcio raises instead of returning 0
                raise OSError(f"OtlpReceiver could not bind 127.0.0.1:{want}: {exc}") from exc
            if not bound:
                raise OSError(f"OtlpReceiver could not bind 127.0.0.1:{want}")
            server.start()
            self._bound_port = bound
            self._server, self._pool = server, pool
            return self

    def stop(self, grace: float | None = 0) -> None:
        """Stop serving (in-flight RPCs are cancelled after ``grace`` seconds). Safe to call twice."""
        with self._lifecycle:
            server, self._server = self._server, None
            pool, self._pool = self._pool, None
            if server is not None:
                server.stop(grace).wait()
            if pool is not None:
                pool.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("OtlpReceiver has not been started")
        return self._bound_port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- failure injection --------------------------------------------------------------------------

    def fail_with(
        self,
        code: grpc.StatusCode,
        *,
        details: str = "injected failure",
        times: int | None = None,
        retry_delay: float | None = None,
    ) -> None:
        """Answer the next ``times`` exports (all, if ``None``) with ``code``.

        ``retry_delay`` adds a ``google.rpc.RetryInfo`` trailer, which the OTLP exporter uses instead of its
        exponential backoff; a small value keeps retry tests fast.
        """
        if code == grpc.StatusCode.OK:
            raise ValueError("use recover() to answer OK")
        with self._cond:
            self._failure = _Failure(code, details, retry_delay)
            self._failures_left = times

    def recover(self) -> None:
        """Answer OK again."""
        with self._cond:
            self._failure = None
            self._failures_left = None

    @property
    def error_code(self) -> grpc.StatusCode | None:
        with self._cond:
            return None if self._failure is None else self._failure.code

    @error_code.setter
    def error_code(self, code: grpc.StatusCode | None) -> None:
        if code is None:
            self.recover()
        else:
            self.fail_with(code)

    def _take_failure(self) -> _Failure | None:
        failure = self._failure
        if failure is not None and self._failures_left is not None:
            self._failures_left -= 1
            if self._failures_left <= 0:
                self._failure = None
                self._failures_left = None
        return failure

    # -- request handling ---------------------------------------------------------------------------

    def _handle(
        self,
        signal: Signal,
        request: trace_service_pb2.ExportTraceServiceRequest | metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> None:
        metadata: dict[str, str | bytes] = {item.key: item.value for item in context.invocation_metadata() or ()}
        with self._cond:
            failure = self._take_failure()
        accepted = failure is None
        spans: list[ReceivedSpan] = []
        points: list[MetricPoint] = []
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            spans = _decode_spans(request, accepted)
        else:
            points = _decode_metrics(request, accepted)
        record = ExportRequest(
            signal=signal,
            metadata=metadata,
            item_count=len(spans) + len(points),
            accepted=accepted,
            status_code=grpc.StatusCode.OK if failure is None else failure.code,
        )
        with self._cond:
            self._requests.append(record)
            self._spans.extend(spans)
            self._points.extend(points)
            self._generation += 1
            self._cond.notify_all()
        if failure is not None:
            if failure.retry_delay is not None:
                seconds = int(failure.retry_delay)
                nanos = round((failure.retry_delay - seconds) * 1e9)
                info = RetryInfo(retry_delay=Duration(seconds=seconds, nanos=nanos))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(failure.code, failure.details)

    # -- inspection ---------------------------------------------------------------------------------

    def spans(self, *, include_rejected: bool = False) -> list[ReceivedSpan]:
        with self._cond:
            return [s for s in self._spans if include_rejected or s.accepted]

    def span(self, name: str) -> ReceivedSpan:
        """The single accepted span called ``name`` (raises ``LookupError`` unless exactly one)."""
        found = [s for s in self.spans() if s.name == name]
        if len(found) != 1:
            raise LookupError(f"expected exactly one span {name!r}, got {len(found)}; received: {self.describe()}")
        return found[0]

    def metric_points(self, name: str | None = None, *, include_rejected: bool = False) -> list[MetricPoint]:
        with self._cond:
            return [p for p in self._points if (include_rejected or p.accepted) and (name is None or p.name == name)]

    def requests(self) -> list[ExportRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def requests_received(self) -> int:
        with self._cond:
            return len(self._requests)

    @property
    def requests_rejected(self) -> int:
        with self._cond:
            return sum(1 for r in self._requests if not r.accepted)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._points.clear()
            self._requests.clear()
            self._generation += 1
            self._cond.notify_all()

    def describe(self) -> str:
        """A short human summary of everything received (used in timeout messages)."""
        with self._cond:
            span_names = [s.name + ("" if s.accepted else " (rejected)") for s in self._spans]
            metric_names = sorted({p.name + ("" if p.accepted else " (rejected)") for p in self._points})
            requests = [f"{r.signal}:{r.status_code.name}:{r.item_count}" for r in self._requests]
        return f"{len(requests)} request(s) {requests[:20]}; spans {span_names[:50]}; metrics {metric_names[:50]}"

    # -- waiting ------------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Re-evaluate ``predicate`` whenever something arrives; return its first truthy result.

        Raises ``TimeoutError`` (listing what was received) if it stays falsy for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                generation = self._generation
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"OtlpReceiver: condition not met within {timeout}s; received: {self.describe()}")
            with self._cond:
                if self._generation == generation:  # nothing new yet: sleep until something arrives
                    self._cond.wait(remaining)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``n`` accepted spans arrived; return all accepted spans."""
        if n <= 0:
            return self.spans()
        return self.wait_for(lambda: spans if len(spans := self.spans()) >= n else None, timeout)

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> list[MetricPoint]:
        """Wait until at least one accepted point of metric ``name`` arrived; return those points."""
        return self.wait_for(lambda: self.metric_points(name), timeout)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[ExportRequest]:
        """Wait until at least ``n`` export RPCs (accepted or not) arrived; return them."""
        if n <= 0:
            return self.requests()
        return self.wait_for(lambda: reqs if len(reqs := self.requests()) >= n else None, timeout)
