"""OpenTelemetry providers built from the config, owned by one app.

The plugin builds one :class:`Telemetry` in its lifespan: a ``TracerProvider`` with the
config's sampler, resource and batch sizes (handed over explicitly, so the config is
the whole truth), spans through a ``BatchSpanProcessor`` to the OTLP exporters, and,
when an endpoint is set, a ``MeterProvider`` exporting the request-duration histogram
and the operation histograms.

The process-wide pieces (OpenTelemetry's global provider, log correlation) live in
:mod:`litestar_omnii_obs._internal.shared`.

A dead collector must never become the outage: exports run in worker threads, the span
queue is bounded (:class:`~litestar_omnii_obs._internal.otlp.batcher.SpanBatcher`), each destination
follows the one outage rule of :mod:`litestar_omnii_obs._internal.health` (logged once per outage and
once on recovery, probed every 2 s), shutdown gives up after ``shutdown_timeout`` seconds,
and then reports, per destination, what was delivered and what was lost and why.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import Span, SpanContext, SpanKind

from litestar_omnii_obs._internal._bounded import run_bounded
from litestar_omnii_obs._internal._compat import follow_config_not_environ
from litestar_omnii_obs._internal.attributes import TrustedProxies
from litestar_omnii_obs._internal.config import ConfigError, ObservabilityConfig, TracingConfig, redact_url
from litestar_omnii_obs._internal.durations import SCOPE, RequestDurations
from litestar_omnii_obs._internal.records import GraphQueryMetric, MetricRecord, SyncMetric
from litestar_omnii_obs._internal.sampling import PresetTraceIds, ServerSampling, new_span_id
from litestar_omnii_obs._internal.server_span import ServerSpans
from litestar_omnii_obs._internal.shared import route_global_provider

if TYPE_CHECKING:
    # Imported where used: the SDK's metrics and span exporters, and our OTLP exporters (gRPC, protobuf),
    # load only when the config exports (issue 22: an app without peers does not pay for them).
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from litestar_omnii_obs._internal.otlp import FanOutSpanExporter, Target
    from litestar_omnii_obs._internal.otlp.batcher import SpanBatcher
    from litestar_omnii_obs._internal.otlp.metrics import OtlpMetricExporter

__all__ = [
    "Telemetry",
    "metric_exporter_from_config",
    "build_resource",
    "build_span_exporter",
    "setup_telemetry",
]

_logger = logging.getLogger("litestar_omnii_obs")


# --------------------------------------------------------------------------- sampling and resource


def build_resource(config: ObservabilityConfig) -> Resource:
    """The resource from the config alone (``Resource.create`` would read ``os.environ``)."""
    return Resource(
        {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": sdk_version,
            **dict(config.tracing.resource_attributes),
            "service.name": config.service_name,
            **({} if config.version is None else {"service.version": config.version}),
            "deployment.environment.name": config.environment,
        }
    )


# --------------------------------------------------------------------------- the app's telemetry


class Telemetry:
    """The tracer, meter and instruments the request hooks and ``timed_operation`` use."""

    def __init__(
        self,
        config: ObservabilityConfig,
        tracer_provider: TracerProvider,
        *,
        sampling: ServerSampling | None = None,
        meter_provider: MeterProvider | None = None,
        durations: RequestDurations | None = None,
        span_exporter: FanOutSpanExporter | None = None,
        batcher: SpanBatcher | None = None,
        metric_exporter: OtlpMetricExporter | None = None,
        ids: PresetTraceIds | None = None,
        server_spans: ServerSpans | None = None,
        detachable: Sequence[_ForwardUntilStopped] = (),
    ) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        #: Our sampling rule when the provider is ours (built from the config); ``None``: an app's own provider.
        self.sampling = sampling
        self.tracer = tracer_provider.get_tracer("litestar_omnii_obs")
        self.request_duration = durations
        self.records_metrics = meter_provider is not None and durations is not None
        if meter_provider is not None:
            meter = meter_provider.get_meter("litestar_omnii_obs")
            meter.create_observable_gauge(
                "omnii.metrics.queue_size",
                callbacks=[self._queue_size],
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
        self.pending_lines: Callable[[], int] = lambda: 0  # the app's metric writer's, set by the plugin
        self.span_exporter = span_exporter
        self.batcher = batcher
        self.metric_exporter = metric_exporter
        self.ids = ids
        #: Sampled server spans without the SDK's per-span work, while the processors are all ours.
        self.server_spans = server_spans
        #: Whose forwarded headers a recorded server span believes (``tracing.trusted_proxies``).
        self.proxies = TrustedProxies(config.tracing.trusted_proxies)
        self.detachable = list(detachable)  # processors added to a provider that is not ours

    def start_sampled(
        self,
        name: str,
        trace_id: int,
        caller: SpanContext | None,
        parent: Context | None,
        attributes: dict[str, Any],
    ) -> Span:
        """A server span the sampling decision kept, in the trace it was decided for (``caller``: the caller's span)."""
        if self.server_spans is not None:
            return self.server_spans.start(name, trace_id, new_span_id(), caller, attributes, parent_context=parent)
        if caller is None:
            assert self.ids is not None
            self.ids.preset(trace_id)  # the SDK's sampler then sees the trace id the decision was made on
        return self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)

    def start_foreign(self, name: str, parent: Context | None, attributes: Callable[[], dict[str, Any]]) -> Span:
        """A server span from a provider that is not ours: its own sampler decides."""
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        if span.is_recording():
            span.set_attributes(attributes())
        return span

    def _queue_size(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(self.pending_lines())]

    def record_operation(self, name: str, duration: float, exc: BaseException | None) -> None:
        """``timed_operation`` observer: one histogram point per operation."""
        self.operation_duration.record(duration, {"operation": name, "outcome": "error" if exc is not None else "ok"})

    def record_metric(self, metric: MetricRecord) -> None:
        """``log_metric`` observer: graph-query and sync records feed their histograms."""
        if isinstance(metric, GraphQueryMetric):
            self.graph_query_duration.record(metric.duration, {"query_type": metric.query_type})
        elif isinstance(metric, SyncMetric):
            self.sync_duration.record(metric.duration, {"source": metric.source})

    async def shutdown(self) -> None:
        """Flush and shut both providers down off the event loop, giving up after ``shutdown_timeout``."""
        timeout = self.config.tracing.shutdown_timeout
        if self.request_duration is not None:
            self.request_duration.close()  # the final export folds what is left
        for processor in self.detachable:
            processor.active = False
        if self.sampling is not None:  # the provider is ours to shut down

            def work() -> None:
                self.tracer_provider.shutdown()
                if self.metric_exporter is not None:
                    self.metric_exporter.final = True
                if self.meter_provider is not None:
                    self.meter_provider.shutdown(timeout_millis=timeout * 1000)

            if not await run_bounded(work, timeout, "otel-shutdown"):
                _logger.warning("OpenTelemetry shutdown did not finish within %.1fs; unsent spans are dropped", timeout)
                if self.batcher is not None:
                    self.batcher.abandon()  # what is still queued or on the wire is counted as lost
            if self.metric_exporter is not None:
                # A final export not finished by now (our bound, or the SDK's shutdown, stopped waiting for it)
                # is lost with the process: counted before the report; a finished one is left as it is.
                self.metric_exporter.abandon()
        if self.span_exporter is not None:
            self.span_exporter.report()
        if self.metric_exporter is not None:
            self.metric_exporter.health.report()


class _ForwardUntilStopped(SpanProcessor):
    """Forwards to ``inner`` until this app stops (the processor stays in a provider the app does not own)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.active = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.active:
            self.inner.on_start(span, parent_context)  # type: ignore[arg-type]

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def build_span_exporter(config: ObservabilityConfig, sentry_dsn: str | None) -> FanOutSpanExporter | None:
    """One exporter for the collector (first: its result is the export's) and Sentry's OTLP endpoint."""
    tracing = config.tracing
    targets: list[Target] = []
    # The OTLP package (transports; gRPC only for grpc) is imported only when there is a target to send to.
    if tracing.traces_endpoint:
        from litestar_omnii_obs._internal.otlp import CollectorTarget

        with _protocol_needs(tracing, "traces"):
            targets.append(
                CollectorTarget(
                    tracing.otlp_endpoint,
                    traces_endpoint=tracing.otlp_traces_endpoint,
                    protocol=tracing.traces_protocol,
                    headers=dict(tracing.otlp_headers),
                    timeout=tracing.export_timeout,
                    compression=tracing.traces_compression,
                )
            )
    rate = config.sentry_traces_sample_rate
    if sentry_dsn and rate > 0:
        from litestar_omnii_obs._internal.otlp import SentryTarget

        targets.append(SentryTarget.from_dsn(sentry_dsn, rate=rate, timeout=tracing.export_timeout))
    if not targets:
        return None
    from litestar_omnii_obs._internal.otlp import FanOutSpanExporter

    return FanOutSpanExporter(targets)


@contextmanager
def _protocol_needs(tracing: TracingConfig, signal: Literal["traces", "metrics"]) -> Iterator[None]:
    """A protocol whose library is not installed (grpcio for ``grpc``) fails start-up naming the variable."""
    try:
        yield
    except ImportError as exc:
        own = tracing.otlp_traces_protocol if signal == "traces" else tracing.otlp_metrics_protocol
        protocol = tracing.traces_protocol if signal == "traces" else tracing.metrics_protocol
        name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL" if own else "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise ConfigError([(name, protocol, str(exc))]) from exc


def metric_exporter_from_config(
    config: ObservabilityConfig, durations: RequestDurations | None = None
) -> OtlpMetricExporter:
    """The OTLP metric exporter for the config's metrics endpoint and protocol (also used by ``obs check``)."""
    from litestar_omnii_obs._internal.otlp.metrics import build_metric_exporter, metric_preferences

    tracing = config.tracing
    with _protocol_needs(tracing, "metrics"):
        return build_metric_exporter(
            tracing.otlp_endpoint,
            tracing.metrics_protocol,
            dict(tracing.otlp_headers),
            tracing.export_timeout,
            metrics_endpoint=tracing.otlp_metrics_endpoint,
            compression=tracing.metrics_compression,
            durations=durations,
            **metric_preferences(tracing.metrics_temporality, tracing.metrics_histogram_aggregation),
        )


#: OTLP/gRPC's registered port: an endpoint on it with protocol ``http/protobuf`` is most likely a gRPC
#: collector from before ``http/protobuf`` became the default (every export would fail).
_OTLP_GRPC_PORT = 4317


def _warn_grpc_port_over_http(tracing: TracingConfig) -> None:
    """One warning per signal sent over ``http/protobuf`` to port 4317 (the old default's port)."""
    signals = (
        ("traces", tracing.traces_endpoint, tracing.traces_protocol),
        ("metrics", tracing.metrics_endpoint, tracing.metrics_protocol),
    )
    for signal, endpoint, protocol in signals:
        if not endpoint or protocol != "http/protobuf":
            continue
        try:
            port = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").port
        except ValueError:
            continue
        if port == _OTLP_GRPC_PORT:
            _logger.warning(
                "OTLP %s go to %s over http/protobuf, but port 4317 is OTLP/gRPC's: set "
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc (or its per-signal form; pip install 'litestar-omnii-obs[grpc]') "
                "or use port 4318",
                signal,
                redact_url(endpoint),
            )


def setup_telemetry(
    config: ObservabilityConfig,
    extra_processors: Sequence[SpanProcessor] = (),
    capture_exporter: SpanExporter | None = None,
    sentry_dsn: str | None = None,
) -> Telemetry:
    """Build the providers ``config`` asks for (called from the plugin's lifespan).

    ``capture_exporter`` (the pytest plugin's in-memory exporter) gets every recorded span
    synchronously, beside the configured exporters. ``sentry_dsn``: the spans of the
    traces Sentry keeps also go to that project's OTLP traces endpoint.
    """
    existing = trace.get_tracer_provider()
    if config.tracing.use_app_provider and isinstance(existing, TracerProvider):
        return _adopt_provider(config, existing, extra_processors, capture_exporter)
    tracing = config.tracing
    resource = build_resource(config)
    _warn_grpc_port_over_http(tracing)
    exporter = build_span_exporter(config, sentry_dsn)
    try:  # before any thread starts: a metrics protocol that cannot load (no grpcio) leaves nothing running
        meter_provider, durations, metric_exporter = _metrics(config, resource)
    except BaseException:
        if exporter is not None:
            exporter.shutdown()
        raise
    # With nobody to receive spans, record none: trace ids still exist for X-Request-ID and logs.
    consumers = bool(exporter or tracing.console or extra_processors or capture_exporter)
    ids = PresetTraceIds()
    sampling = ServerSampling.from_config(config, consumers)
    tracer_provider = _PluginTracerProvider(
        resource=resource, shutdown_on_exit=False, sampler=sampling.sdk_sampler(), id_generator=ids
    )
    follow_config_not_environ(tracer_provider, False)
    processors, batcher = _span_processors(config, exporter, capture_exporter)
    for processor in [*processors, *extra_processors]:
        tracer_provider.add_span_processor(processor)
    # sentry-sdk's span processor gets the SDK's own spans, which it is written against: ServerSpans only without it.
    server_spans = None if extra_processors else ServerSpans(processors, resource, SCOPE)
    tracer_provider.server_spans, tracer_provider.records_none = server_spans, sampling.never
    if tracing.set_global_provider:
        route_global_provider()
    return Telemetry(
        config,
        tracer_provider,
        sampling=sampling,
        meter_provider=meter_provider,
        durations=durations,
        span_exporter=exporter,
        batcher=batcher,
        metric_exporter=metric_exporter,
        ids=ids,
        server_spans=server_spans,
    )


class _PluginTracerProvider(TracerProvider):
    """The provider the plugin builds: a processor the app adds later also gets the requests' server spans.

    Unless the configuration records no span at all (no exporter): that is decided at start-up, so
    the processor would get nothing, and the app is told once.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_spans: ServerSpans | None = None  # set once the plugin's own processors are in
        self.records_none = False
        self._adding = threading.Lock()  # two threads adding at once: both reach the SDK and the server spans

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        with self._adding:
            super().add_span_processor(span_processor)
            if self.server_spans is not None:
                self.server_spans.add(span_processor)
        if self.records_none:
            self.records_none = False  # said once
            _logger.warning(
                "a span processor was added to the plugin's tracer provider, which records no span with this"
                " configuration (no span exporter is configured); for spans of your own,"
                " set a TracerProvider with opentelemetry.trace.set_tracer_provider before the app starts:"
                " the plugin uses it (OMNII_OBS_USE_APP_PROVIDER)"
            )


def _adopt_provider(
    config: ObservabilityConfig,
    existing: TracerProvider,
    extra_processors: Sequence[SpanProcessor],
    capture_exporter: SpanExporter | None,
) -> Telemetry:
    """The application's own provider (``OMNII_OBS_USE_APP_PROVIDER``): ours are added, removable on stop."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    _logger.warning("using the application's own OpenTelemetry TracerProvider; not installing another")
    # The SDK cannot remove a span processor: ours stop forwarding when this app stops.
    added = [_ForwardUntilStopped(p) for p in extra_processors]
    if capture_exporter is not None:
        added.append(_ForwardUntilStopped(SimpleSpanProcessor(capture_exporter)))
    for detachable in added:
        existing.add_span_processor(detachable)
    return Telemetry(config, existing, detachable=added)


def _span_processors(
    config: ObservabilityConfig, exporter: FanOutSpanExporter | None, capture_exporter: SpanExporter | None
) -> tuple[list[SpanProcessor], SpanBatcher | None]:
    """Every span processor of ours: the test capture, the batcher to the OTLP targets, or the console."""
    tracing = config.tracing
    processors: list[SpanProcessor] = []
    if capture_exporter is not None:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        processors.append(SimpleSpanProcessor(capture_exporter))
    batcher = None
    if exporter is not None:
        from litestar_omnii_obs._internal.otlp.batcher import SpanBatcher

        batcher = SpanBatcher(
            exporter,
            max_queue=tracing.bsp_max_queue_size,
            schedule_delay=tracing.bsp_schedule_delay / 1000,
            max_batch=tracing.bsp_max_export_batch_size,
        )
        processors.append(batcher)
    if tracing.console and (not tracing.traces_endpoint or "console" in tracing.traces_exporter):
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        processors.append(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif not tracing.traces_endpoint and capture_exporter is None and "otlp" in tracing.traces_exporter:
        _logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is not set: spans are created for trace ids but not exported")
    return processors, batcher


def _metrics(
    config: ObservabilityConfig, resource: Resource
) -> tuple[MeterProvider | None, RequestDurations | None, OtlpMetricExporter | None]:
    """The meter provider, the request-duration aggregation and its exporter, when a metrics endpoint is set."""
    metrics_endpoint = config.tracing.metrics_endpoint
    if not metrics_endpoint:
        return None, None, None
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    durations = RequestDurations()
    metric_exporter = metric_exporter_from_config(config, durations)
    durations.start_folding()
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[PeriodicExportingMetricReader(metric_exporter)],
        shutdown_on_exit=False,
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
    follow_config_not_environ(meter_provider, False)
    return meter_provider, durations, metric_exporter
