"""A real OTLP/gRPC collector stand-in: serves the trace and metrics ``Export`` RPCs on 127.0.0.1.

It speaks the wire protocol the OpenTelemetry OTLP gRPC exporters speak (the generated
``opentelemetry.proto`` services on a real grpcio server), decodes what it receives into flat,
plain-python records (:mod:`tests.peers.decode`) and can be told to answer with a gRPC error status to exercise exporter
failure paths. Everything is thread-safe; the wait helpers never assert on wall-clock time.

Typical use::

    with OtlpReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)
        ...
        spans = receiver.wait_for_spans(2)
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.peers.base import Peer
from tests.peers.decode import MetricPoint, ReceivedSpan, Signal, decode_metrics, decode_spans

__all__ = ["ExportRequest", "MetricPoint", "OtlpReceiver", "ReceivedSpan"]  # the records it hands out


@dataclass(frozen=True)
class ExportRequest:
    """One ``Export`` RPC: which signal, its metadata, how many spans/points it held and how it was answered."""

    signal: Signal
    metadata: dict[str, str | bytes]
    item_count: int
    accepted: bool
    status_code: grpc.StatusCode


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


class OtlpReceiver(Peer):
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
        metrics: bool = True,
    ) -> None:
        super().__init__(port)
        #: ``False``: a traces-only backend (Jaeger, Tempo, Phoenix): metric exports get ``UNIMPLEMENTED``.
        self.serves_metrics = metrics
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._grace: float | None = 0
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

    def _serve(self, port: int) -> int:
        pool = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="otlp-receiver")
        server = grpc.server(
            pool,
            # Never share the port silently with another process (gRPC enables SO_REUSEPORT by default).
            options=[("grpc.so_reuseport", 0)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        if self.serves_metrics:
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)
        try:
            bound = server.add_insecure_port(f"127.0.0.1:{port}")
        except RuntimeError as exc:  # newer grpcio raises instead of returning 0
            raise OSError(f"OtlpReceiver could not bind 127.0.0.1:{port}: {exc}") from exc
        if not bound:
            raise OSError(f"OtlpReceiver could not bind 127.0.0.1:{port}")
        server.start()
        self._server, self._pool = server, pool
        return int(bound)

    def _shutdown(self) -> None:
        server, self._server = self._server, None
        pool, self._pool = self._pool, None
        if server is not None:
            server.stop(self._grace).wait()
        if pool is not None:
            pool.shutdown(wait=True)

    def stop(self, grace: float | None = 0) -> None:
        """Stop serving (in-flight RPCs are cancelled after ``grace`` seconds). Safe to call twice."""
        self._grace = grace
        super().stop()

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
            spans = decode_spans(request, accepted)
        else:
            points = decode_metrics(request, accepted)
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
            self._arrived()
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
            self._arrived()

    def describe(self) -> str:
        """A short human summary of everything received (used in timeout messages)."""
        with self._cond:
            span_names = [s.name + ("" if s.accepted else " (rejected)") for s in self._spans]
            metric_names = sorted({p.name + ("" if p.accepted else " (rejected)") for p in self._points})
            requests = [f"{r.signal}:{r.status_code.name}:{r.item_count}" for r in self._requests]
        return f"{len(requests)} request(s) {requests[:20]}; spans {span_names[:50]}; metrics {metric_names[:50]}"

    # -- waiting ------------------------------------------------------------------------------------

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
