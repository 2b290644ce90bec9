"""What one app's plugin started, and how code without the app at hand finds it.

Each :class:`~litestar_omnii_obs.ObservabilityPlugin` builds a :class:`Runtime` in its
lifespan: its metric writer and labels, its tracer, its Sentry reporter, its observers.
``log_metric``, ``timed_operation`` and ``capture_error`` take no app argument, so they
find the runtime of the app they run in: the plugin's middleware and lifespan set a
context variable, which every task started from a request or from start-up inherits.
Code outside any such context (a thread of its own, another event loop) gets the most
recently started app that is still running; with no app running, a default writer to
stdout (so a script that only calls ``log_metric`` still gets its lines).
"""

from __future__ import annotations

import atexit
import functools
import gc
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace

from litestar_omnii_obs._internal.config import ObservabilityConfig
from litestar_omnii_obs._internal.records import ApiLatencyMetric, milliseconds
from litestar_omnii_obs._internal.sink import MetricWriter

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sentry_sdk.transport import Transport

    from litestar_omnii_obs._internal.records import MetricRecord
    from litestar_omnii_obs._internal.sentry import SentryReporter

__all__ = ["Capture", "Runtime", "current", "install_capture"]

OperationObserver = Callable[[str, float, "BaseException | None"], None]
MetricObserver = Callable[["MetricRecord"], None]
#: Takes one request's latency record: route, method, status, seconds, error type, trace id (hex), span id,
#: whether the trace is sampled.
#: The last item: fields the line carries beyond its own (``ObservabilityConfig.enrich``'s declared keys), or None.
LatencyRecorder = Callable[
    [str, str, int, float, "str | None", bytes, int, bool, "dict[str, str | int | float | bool] | None"], None
]


class Capture(Protocol):
    """In-memory sinks that replace an app's real ones (the pytest plugin provides one)."""

    def on_metric(self, metric: MetricRecord) -> None: ...

    def confine(self, config: ObservabilityConfig) -> ObservabilityConfig:
        """The config a captured app runs with: nothing sent out of the process, spans recorded as the test asks."""
        ...

    def span_exporter(self) -> SpanExporter: ...

    def sentry_transport(self) -> Transport: ...


_gc_frozen = False  # process-wide, as the garbage collector is


def freeze_gc_once() -> None:
    """``gc.freeze()`` at the end of the process's first app start-up (see ``ObservabilityConfig.freeze_gc``)."""
    global _gc_frozen
    if not _gc_frozen:
        _gc_frozen = True
        gc.freeze()


class Runtime:
    """One running app's writer, tracer, Sentry reporter and observers."""

    __slots__ = (
        "config",
        "metric_observers",
        "needs_request_setup",
        "operation_observers",
        "request_observers",
        "running",
        "sentry",
        "tracer",
        "tracer_provider",
        "writer",
    )

    def __init__(self, config: ObservabilityConfig, writer: MetricWriter) -> None:
        self.config = config
        self.writer = writer
        self.tracer: trace.Tracer | None = None
        self.tracer_provider: TracerProvider | None = None
        self.sentry: SentryReporter | None = None
        self.operation_observers: list[OperationObserver] = []
        self.metric_observers: list[MetricObserver] = []
        #: Observers of every request's ``api_latency`` record (the pytest plugin); empty in production.
        self.request_observers: list[MetricObserver] = []
        self.running = False
        #: Whether the request hook has something to set up on each request: Sentry's per-request
        #: breadcrumbs, or this app's context while several apps run (kept by :func:`enter` and :func:`leave`).
        self.needs_request_setup = False

    def record(self, metric: MetricRecord, context: trace.SpanContext | None = None) -> None:
        """Write ``metric`` with ``context``'s ids (default: the current span's) and tell the observers."""
        if context is None:
            context = trace.get_current_span().get_span_context()
        self.writer.submit(metric, context.trace_id, context.span_id, context.trace_flags.sampled)
        for observer in self.metric_observers:
            observer(metric)

    def record_latency(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        error: str | None,
        trace_hex: bytes,
        span_id: int,
        sampled: bool = False,
        extra: dict[str, str | int | float | bool] | None = None,
    ) -> None:
        """One request's ``api_latency`` line; the typed record is built only when an observer wants it.

        ``trace_hex``: the trace id as 32 hex digits (``b""`` without tracing), as ``X-Request-ID`` sends it.
        """
        if not self.request_observers:
            self.writer.submit_latency(route, method, status, seconds, error, trace_hex, span_id, sampled, extra)
            return
        metric = ApiLatencyMetric(
            route=route, method=method, status=status, duration=milliseconds(seconds), error=error
        )
        self.writer.submit(metric, int(trace_hex, 16) if trace_hex else 0, span_id, sampled, extra)
        for observer in self.request_observers:
            observer(metric)

    def latency_recorder(self) -> LatencyRecorder:
        """:meth:`record_latency`, or the writer's own method while no request observer is registered.

        The request hook takes this once at start-up, after the observers are in place: one call
        less on every request.
        """
        return self.record_latency if self.request_observers else self.writer.submit_latency

    def operation_done(self, name: str, duration: float, exc: BaseException | None) -> None:
        for observer in self.operation_observers:
            observer(name, duration, exc)


_current: ContextVar[Runtime | None] = ContextVar("omnii_obs_runtime", default=None)
#: Every runtime started and not yet stopped, oldest first. Changed only by :func:`enter` and :func:`leave`;
#: the request hook reads its length (with one app running, that app is found without the context variable).
RUNNING: list[Runtime] = []
_lock = threading.Lock()
_captures: list[Capture] = []


def current() -> Runtime:
    """The runtime of the app this code runs in (see the module docstring for the fallbacks)."""
    runtime = _current.get()
    if runtime is not None and runtime.running:
        return runtime
    if RUNNING:
        return RUNNING[-1]
    return _default()


@functools.cache
def _default() -> Runtime:
    """The writer for code that runs with no app running: default config, stdout, written out at exit."""
    config = ObservabilityConfig()
    writer = MetricWriter(config)
    atexit.register(_close_at_exit, writer, config.metrics.shutdown_timeout)
    return Runtime(config, writer)


def _close_at_exit(writer: MetricWriter, timeout: float) -> None:
    """Write the default writer's queued lines before the process ends, giving up after ``timeout``.

    Its thread is a daemon (a pipe nobody reads must not hold the process), so without this a
    script's last lines would be lost; the wait is bounded like the plugin's own shutdown.
    """
    closer = threading.Thread(target=writer.close, name="omnii-obs-exit", daemon=True)
    closer.start()
    closer.join(timeout)


def running() -> list[Runtime]:
    """Every runtime started and not yet stopped, oldest first."""
    return list(RUNNING)


def enter(runtime: Runtime) -> None:
    """Mark ``runtime`` running and make it the current one in this context."""
    with _lock:
        runtime.running = True
        RUNNING.append(runtime)
        _settle_request_setup()
    _current.set(runtime)


def leave(runtime: Runtime) -> None:
    with _lock:
        runtime.running = False
        if runtime in RUNNING:
            RUNNING.remove(runtime)
        runtime.needs_request_setup = False
        _settle_request_setup()


def _settle_request_setup() -> None:
    several = len(RUNNING) > 1
    for runtime in RUNNING:
        runtime.needs_request_setup = several or runtime.sentry is not None


#: Make a runtime current for this request's task (the middleware does, while several apps run).
set_current = _current.set


def install_capture(capture: Capture) -> Callable[[], None]:
    """Apps started from now on use ``capture``'s sinks; returns the function that stops that."""
    _captures.append(capture)

    def remove() -> None:
        if capture in _captures:
            _captures.remove(capture)

    return remove


def active_capture() -> Capture | None:
    """The capture installed last, if any."""
    return _captures[-1] if _captures else None
