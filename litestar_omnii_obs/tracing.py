"""OpenTelemetry providers built from the config: traces and metrics over OTLP/gRPC.

The plugin builds one :class:`Telemetry` in its lifespan. It owns a ``TracerProvider``
(spans through a ``BatchSpanProcessor`` to the OTLP gRPC exporter) and, when an
endpoint is set, a ``MeterProvider`` (a periodic reader to the OTLP metric exporter).
The SDK keeps reading its own ``OTEL_*`` variables (sampler, batch sizes, headers,
resource attributes), so they keep their spec meaning.

A dead collector must never become the outage: exports run in the SDK's worker
threads, the span queue is bounded, the exporter's per-batch retry warnings are
replaced by one warning when export starts failing and one note when it recovers,
dropped spans are counted and reported once, and shutdown gives up after
``shutdown_timeout`` seconds instead of the exporter's retry budget.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as SdkHistogram
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from litestar_omnii_obs._otlp import FastOTLPSpanExporter
from litestar_omnii_obs.config import ObservabilityConfig, redact_url

__all__ = ["Telemetry", "install_log_correlation", "setup_telemetry"]

_logger = logging.getLogger("litestar_omnii_obs")

#: Semantic-convention bucket boundaries for ``http.server.request.duration`` (seconds).
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# Loggers whose per-batch messages we replace with one message per outage.
_NOISY_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)


class RequestDurations:
    """``http.server.request.duration``, aggregated in-process and exported with the SDK's batch.

    The SDK's ``Histogram.record`` costs 12-22 µs a call on the request path (attribute
    hashing, view matching, exemplar reservoirs); this keeps the same cumulative
    explicit-bucket histogram per (method, route, status) for about 1 µs and hands the
    points to the OTLP metric exporter when the periodic reader exports.
    """

    def __init__(self, bounds: Sequence[float] = HTTP_DURATION_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.start = time.time_ns()
        self._lock = threading.Lock()
        self._points: dict[tuple[str, str, int], list[Any]] = {}

    def record(self, seconds: float, method: str, route: str, status: int) -> None:
        index = bisect.bisect_left(self.bounds, seconds)
        key = (method, route, status)
        with self._lock:
            point = self._points.get(key)
            if point is None:
                point = self._points[key] = [0, 0.0, seconds, seconds, [0] * (len(self.bounds) + 1)]
            point[0] += 1
            point[1] += seconds
            point[2] = min(point[2], seconds)
            point[3] = max(point[3], seconds)
            point[4][index] += 1

    def metric(self) -> Metric | None:
        """A snapshot as an SDK ``Metric`` (cumulative), or ``None`` before the first request."""
        now = time.time_ns()
        with self._lock:
            snapshot = [(key, list(point[:4]), list(point[4])) for key, point in self._points.items()]
        if not snapshot:
            return None
        points = [
            HistogramDataPoint(
                attributes={"http.request.method": method, "http.route": route, "http.response.status_code": status},
                start_time_unix_nano=self.start,
                time_unix_nano=now,
                count=count,
                sum=total,
                bucket_counts=buckets,
                explicit_bounds=self.bounds,
                min=low,
                max=high,
            )
            for (method, route, status), (count, total, low, high), buckets in snapshot
        ]
        return Metric(
            name="http.server.request.duration",
            description="Duration of HTTP server requests.",
            unit="s",
            data=SdkHistogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
        )


def _with_extra(data: MetricsData, extra: Metric) -> MetricsData:
    """``data`` plus ``extra`` in this package's scope (the OTLP encoder keys scopes by name)."""
    if not data.resource_metrics:
        return data
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scope in enumerate(scopes):
        if scope.scope.name == _SCOPE.name:
            scopes[index] = ScopeMetrics(
                scope=scope.scope, metrics=[*scope.metrics, extra], schema_url=scope.schema_url
            )
            break
    else:
        scopes.append(ScopeMetrics(scope=_SCOPE, metrics=[extra], schema_url=""))
    merged = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=[merged, *rest])


_SCOPE = InstrumentationScope("litestar_omnii_obs")


class _OutageReporter(logging.Filter):
    """Swallows the SDK's per-batch export and queue-full messages; counts drops."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.drop_reported = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Queue full"):
            self.dropped += 1
            if not self.drop_reported:
                self.drop_reported = True
                _logger.warning("span queue full: spans are being dropped (counted; reported again at shutdown)")
            return False
        return not ("export" in message and ("Transient error" in message or "Failed to export" in message))


class _ReportingExporter:
    """Wraps an exporter: one warning when exports start failing, one note when they recover."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target
        self.failing = False

    def observe(self, ok: bool) -> None:
        if not ok and not self.failing:
            self.failing = True
            _logger.warning(
                "OTLP %s export to %s is failing; data is dropped until it recovers (logged once)",
                self.kind,
                self.target,
            )
        elif ok and self.failing:
            self.failing = False
            _logger.warning("OTLP %s export to %s recovered", self.kind, self.target)


class _GuardedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, target: str) -> None:
        self.inner = inner
        self.report = _ReportingExporter("trace", target)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        self.report.observe(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _GuardedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, target: str, durations: RequestDurations) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # pyright: ignore[reportPrivateUsage]
            preferred_aggregation=inner._preferred_aggregation,  # pyright: ignore[reportPrivateUsage]
        )
        self.inner = inner
        self.durations = durations
        self.report = _ReportingExporter("metric", target)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        extra = self.durations.metric()
        if extra is not None:
            metrics_data = _with_extra(metrics_data, extra)
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        self.report.observe(result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class Telemetry:
    """The tracer, meter and instruments the request hooks and ``timed_operation`` use."""

    def __init__(
        self,
        config: ObservabilityConfig,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        owned: bool,
        reporter: _OutageReporter,
        durations: RequestDurations | None = None,
    ) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.owned = owned
        self._reporter = reporter
        provider: trace.TracerProvider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("litestar_omnii_obs")
        meter: Meter = (meter_provider or NoOpMeterProvider()).get_meter("litestar_omnii_obs")
        self.request_duration = durations
        meter.create_observable_gauge(
            "omnii.metrics.queue_size",
            callbacks=[_queue_size],
            description="Metric lines waiting for the background writer.",
        )
        self.operation_duration = meter.create_histogram(
            "omnii.operation.duration", unit="ms", description="Duration of timed_operation work."
        )
        self.graph_query_duration = meter.create_histogram(
            "omnii.graph_query.duration", unit="ms", description="Duration of graph queries."
        )
        self.sync_duration = meter.create_histogram(
            "omnii.sync.duration", unit="ms", description="Duration of sync jobs."
        )
        self.records_metrics = meter_provider is not None and durations is not None

    def record_operation(self, name: str, duration: float, exc: BaseException | None) -> None:
        """``timed_operation`` observer: one histogram point per operation."""
        self.operation_duration.record(duration, {"operation": name, "outcome": "error" if exc is not None else "ok"})

    def record_metric(self, metric: object) -> None:
        """``log_metric`` observer: graph-query and sync records feed their histograms."""
        from litestar_omnii_obs.metrics import GraphQueryMetric, SyncMetric

        if isinstance(metric, GraphQueryMetric):
            self.graph_query_duration.record(metric.duration, {"query_type": metric.query_type})
        elif isinstance(metric, SyncMetric):
            self.sync_duration.record(metric.duration, {"source": metric.source})

    async def shutdown(self) -> None:
        """Flush and shut both providers down, giving up after ``shutdown_timeout``."""
        if not self.owned:
            return
        done = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                if self.tracer_provider is not None:
                    self.tracer_provider.shutdown()
                if self.meter_provider is not None:
                    self.meter_provider.shutdown(timeout_millis=self.config.tracing.shutdown_timeout * 1000)
            except Exception:
                _logger.exception("OpenTelemetry shutdown failed")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed after we gave up waiting
                    loop.call_soon_threadsafe(_resolve, done)

        # A daemon thread: a dead collector must not hold the process after we give up.
        threading.Thread(target=run, name="omnii-obs-otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), self.config.tracing.shutdown_timeout)
        except TimeoutError:
            _logger.warning(
                "OpenTelemetry shutdown did not finish within %.1fs; unsent spans are dropped",
                self.config.tracing.shutdown_timeout,
            )
        if self._reporter.dropped:
            _logger.warning("%d span(s) were dropped because the export queue was full", self._reporter.dropped)
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).removeFilter(self._reporter)


def _queue_size(options: CallbackOptions) -> Iterable[Observation]:
    from litestar_omnii_obs.metrics import queued_lines

    return [Observation(queued_lines())]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resource(config: ObservabilityConfig) -> Resource:
    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES; our keys win on conflict.
    return Resource.create(
        {
            "service.name": config.service_name,
            "service.version": config.version,
            "deployment.environment.name": config.environment,
        }
    )


def _exporter_args(config: ObservabilityConfig, endpoint: str) -> dict[str, Any]:
    args: dict[str, Any] = {
        "endpoint": endpoint,
        "insecure": urlsplit(endpoint).scheme == "http",
        "timeout": config.tracing.export_timeout,
    }
    if config.tracing.otlp_headers:
        args["headers"] = dict(config.tracing.otlp_headers)
    return args


def setup_telemetry(config: ObservabilityConfig, extra_processors: Sequence[SpanProcessor] = ()) -> Telemetry:
    """Build the providers ``config`` asks for (called from the plugin's lifespan)."""
    reporter = _OutageReporter()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).addFilter(reporter)

    existing = trace.get_tracer_provider()
    if config.tracing.use_global_provider and isinstance(existing, TracerProvider):
        _logger.warning("using the application's own OpenTelemetry TracerProvider; not installing another")
        for processor in extra_processors:
            existing.add_span_processor(processor)
        return Telemetry(config, None, None, owned=False, reporter=reporter)

    endpoint = config.tracing.otlp_endpoint
    resource = _resource(config)
    # With nobody to receive spans, record none: trace ids still exist for X-Request-ID and logs.
    consumers = bool(endpoint or config.tracing.console or extra_processors)
    tracer_provider = TracerProvider(
        resource=resource, shutdown_on_exit=False, sampler=None if consumers else ALWAYS_OFF
    )
    meter_provider: MeterProvider | None = None
    durations: RequestDurations | None = None
    if endpoint:
        target = redact_url(endpoint) or endpoint
        exporter = _GuardedSpanExporter(FastOTLPSpanExporter(**_exporter_args(config, endpoint)), target)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        durations = RequestDurations()
        metrics_endpoint = config.tracing.otlp_metrics_endpoint or endpoint
        metric_exporter = _GuardedMetricExporter(
            OTLPMetricExporter(**_exporter_args(config, metrics_endpoint)),
            redact_url(metrics_endpoint) or metrics_endpoint,
            durations,
        )
        meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(metric_exporter)],
            shutdown_on_exit=False,
            exemplar_filter=AlwaysOffExemplarFilter(),
        )
    elif config.tracing.console:
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    else:
        _logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is not set: spans are created for trace ids but not exported")
    for processor in extra_processors:
        tracer_provider.add_span_processor(processor)
    if config.tracing.set_global_provider:
        _set_global(tracer_provider)
    return Telemetry(config, tracer_provider, meter_provider, owned=True, reporter=reporter, durations=durations)


def _set_global(provider: TracerProvider) -> None:
    """Install ``provider`` globally so spans users start nest under the request span."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)


def install_log_correlation() -> Callable[[], None]:
    """Add ``trace_id``/``span_id`` to every log record made while a span is current.

    Returns the function that undoes it. Records made outside a span get empty strings,
    so format strings that use the fields never fail.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        else:
            record.trace_id = record.span_id = ""
        return record

    logging.setLogRecordFactory(factory)

    def restore() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)

    return restore
