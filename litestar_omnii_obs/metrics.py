"""Typed metric records written as JSON lines by a background writer.

``log_metric`` only appends to an in-memory queue; a daemon thread encodes the
records and writes them to the sink every ``flush_interval`` seconds, so the event
loop never waits on a disk or a pipe. The writer does not use stdlib logging:
``Litestar(...)`` reconfigures logging when the app is built and would close a
handler created before it, silently dropping every line.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Generic, Literal, ParamSpec, TypeVar, overload

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace

from litestar_omnii_obs.config import ObservabilityConfig

__all__ = [
    "ApiLatencyMetric",
    "GraphQueryMetric",
    "Metric",
    "OperationMetric",
    "SyncMetric",
    "SyncSource",
    "TimedOperation",
    "log_metric",
    "timed_operation",
]

_logger = logging.getLogger("litestar_omnii_obs")

_T = TypeVar("_T")
_P = ParamSpec("_P")

SyncSource = Literal["calendar", "tasks", "gmail", "contacts"]


class _Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="metric"):
    """Base of every record; the ``metric`` tag names its kind in the JSON line."""


class ApiLatencyMetric(_Record, frozen=True, kw_only=True, tag="api_latency"):
    """One per HTTP request: route template, method, status sent, milliseconds to the last byte."""

    route: str
    method: str
    status: int
    duration: float


class GraphQueryMetric(_Record, frozen=True, kw_only=True, tag="graph_query_duration"):
    """How long a graph query took, in milliseconds."""

    query_type: str
    duration: float
    result_count: int | None = None


class SyncMetric(_Record, frozen=True, kw_only=True, tag="sync_duration"):
    """How long a sync job with an external source took, in milliseconds."""

    source: SyncSource
    user_id: str
    duration: float
    items_synced: int


class OperationMetric(_Record, frozen=True, kw_only=True, tag="operation_duration"):
    """Written by :func:`timed_operation` for any awaited work, failed or not."""

    operation: str
    duration: float
    outcome: Literal["ok", "error"] = "ok"
    error: str | None = None


Metric = ApiLatencyMetric | GraphQueryMetric | SyncMetric | OperationMetric
"""The tagged union of every record this package writes."""

_INVALID_SPAN_ID = trace.INVALID_SPAN_ID


class _Writer:
    """Process-wide queue plus daemon thread that writes JSON lines to the sink."""

    def __init__(self) -> None:
        self._queue: deque[tuple[float, Metric, int, int]] = deque()
        self._encoder = msgspec.json.Encoder()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[bytes] | None = None
        self._failed = False
        self._dropped = 0
        self._stamp_second = -1
        self._stamp_prefix = b""
        self.configure(ObservabilityConfig())

    def configure(self, config: ObservabilityConfig) -> None:
        """Apply sink and labels from ``config``; lines already queued keep their turn."""
        with self._lock:
            self._close_file()
            self._sink = config.metrics.sink
            self._max_queue = config.metrics.max_queue
            self._interval = config.metrics.flush_interval
            self._labels = (
                b',"service":'
                + msgspec.json.encode(config.service_name)
                + b',"environment":'
                + msgspec.json.encode(config.environment)
            )
            self._failed = False
            if self._sink not in ("stdout", "stderr", "off"):
                try:
                    self._file = open(self._sink, "ab")  # noqa: SIM115 - kept open for the process
                except OSError as exc:
                    self._report_failure(exc)

    def submit(self, metric: Metric, context: trace.SpanContext | None = None) -> None:
        """Queue one record with ``context``'s ids (default: the current span's); never blocks or raises."""
        if self._sink == "off":
            return
        if len(self._queue) >= self._max_queue:
            self._dropped += 1
            if self._dropped == 1:
                _logger.warning("metrics queue full (%d lines); dropping lines until it drains", self._max_queue)
            return
        if context is None:
            context = trace.get_current_span().get_span_context()
        self._queue.append((time.time(), metric, context.trace_id, context.span_id))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="omnii-obs-metrics", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.drain()

    def _encode(self, item: tuple[float, Metric, int, int]) -> bytes:
        wall, metric, trace_id, span_id = item
        second = int(wall)
        if second != self._stamp_second:  # format the date once a second, not once a line
            self._stamp_second = second
            self._stamp_prefix = (
                b',"timestamp":"' + datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
            )
        tail = self._stamp_prefix + b'.%06dZ"' % int((wall - second) * 1_000_000) + self._labels
        if span_id != _INVALID_SPAN_ID:
            tail += b',"trace_id":"%032x","span_id":"%016x"' % (trace_id, span_id)
        return self._encoder.encode(metric)[:-1] + tail + b"}\n"

    def drain(self) -> None:
        """Write every queued line now (the writer thread, shutdown and ``atexit`` call this)."""
        with self._lock:
            chunk: list[bytes] = []
            queue = self._queue
            while queue:
                chunk.append(self._encode(queue.popleft()))
            if chunk:
                self._write(b"".join(chunk), len(chunk))

    def _write(self, data: bytes, lines: int) -> None:
        try:
            if self._sink in ("stdout", "stderr"):
                stream = sys.stdout if self._sink == "stdout" else sys.stderr
                buffer = getattr(stream, "buffer", None)
                if buffer is not None:
                    stream.flush()
                    buffer.write(data)
                    buffer.flush()
                else:
                    stream.write(data.decode())
                    stream.flush()
            elif self._file is not None:
                self._file.write(data)
                self._file.flush()
            else:
                raise OSError(f"metrics sink {self._sink!r} is not open")
        except (OSError, ValueError) as exc:
            self._dropped += lines
            self._report_failure(exc)

    def _report_failure(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            _logger.error(
                "metrics sink %r failed (%s); metric lines are dropped and counted, not logged again",
                self._sink,
                exc,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and write every line still queued."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.drain()
        if self._dropped:
            _logger.warning("%d metric line(s) were dropped", self._dropped)
            self._dropped = 0

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _after_fork(self) -> None:
        """A forked worker starts with an empty queue and its own thread."""
        self._lock = threading.Lock()
        self._queue = deque()
        self._thread = None
        self._stop = threading.Event()


_writer = _Writer()
atexit.register(_writer.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_writer._after_fork)  # pyright: ignore[reportPrivateUsage]


def configure_metrics(config: ObservabilityConfig) -> None:
    """Point the process-wide writer at ``config``'s sink (the plugin does this at start-up)."""
    _writer.configure(config)


def flush_metrics(timeout: float = 5.0) -> None:
    """Write every queued line and stop the writer thread (the plugin does this at shutdown)."""
    _writer.close(timeout)


def queued_lines() -> int:
    """How many metric lines wait for the background writer."""
    return len(_writer._queue)  # pyright: ignore[reportPrivateUsage]


def set_tracer(tracer: trace.Tracer | None) -> None:
    """Let ``timed_operation`` start child spans with ``tracer`` (``None`` stops it)."""
    _tracing["tracer"] = tracer


def add_observers(
    on_operation: Callable[[str, float, BaseException | None], None] | None = None,
    on_metric: Callable[[Metric], None] | None = None,
) -> Callable[[], None]:
    """Register observers of timed operations and/or logged metrics; returns their remover."""
    if on_operation is not None:
        _operation_observers.append(on_operation)
    if on_metric is not None:
        _metric_observers.append(on_metric)

    def remove() -> None:
        if on_operation in _operation_observers:
            _operation_observers.remove(on_operation)
        if on_metric in _metric_observers:
            _metric_observers.remove(on_metric)

    return remove


def log_metric(metric: Metric) -> None:
    """Write ``metric`` as one JSON line with timestamp, service, environment and trace ids.

    Never blocks the event loop and never raises: a failing sink is reported once.
    Graph-query and sync records also feed their OpenTelemetry histograms.
    """
    _writer.submit(metric)
    for observer in _metric_observers:
        observer(metric)


def submit_metric(metric: Metric, context: trace.SpanContext | None) -> None:
    """Queue ``metric`` with an explicit span context (the request hooks use this)."""
    _writer.submit(metric, context)


# --------------------------------------------------------------------------- timing


class TimedOperation(Generic[_T]):
    """Times awaited work; use as ``async with``, as a decorator, or ``await`` it.

    ``duration`` (milliseconds) is set when the work ends. A failure is recorded with
    ``outcome="error"`` and the exception's type name, then re-raised unchanged.
    """

    __slots__ = ("_span", "_start", "_token", "duration", "name", "operation")

    def __init__(self, name: str, operation: Callable[[], Awaitable[_T]] | Awaitable[_T] | None = None) -> None:
        self.name = name
        self.operation = operation
        self.duration: float | None = None
        self._start = 0.0
        self._span: trace.Span | None = None
        self._token: object = None

    async def __aenter__(self) -> TimedOperation[_T]:
        tracer = _tracing["tracer"]
        if tracer is not None:
            self._span = tracer.start_span(self.name)
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._start = time.perf_counter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.duration = (time.perf_counter() - self._start) * 1000.0
        span = self._span
        if span is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.set_attribute("omnii.operation.duration_ms", self.duration)
            if exc is not None:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            self._span = None
        _record_operation(self.name, self.duration, exc)

    def __call__(self, func: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Decorate an async function so that every call is timed under this name."""
        name = self.name

        @functools.wraps(func)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            async with TimedOperation[_T](name):
                return await func(*args, **kwargs)

        return wrapper

    def __await__(self) -> Any:
        return self._run().__await__()

    async def _run(self) -> tuple[_T, float]:
        operation = self.operation
        if operation is None:
            raise TypeError("await timed_operation(name, operation) needs an operation to await")
        async with self:
            result = await (operation if not callable(operation) else operation())
        assert self.duration is not None
        return result, self.duration


def _record_operation(name: str, duration: float, exc: BaseException | None) -> None:
    if exc is None:
        _writer.submit(OperationMetric(operation=name, duration=duration))
    else:
        _writer.submit(OperationMetric(operation=name, duration=duration, outcome="error", error=type(exc).__name__))
    for observer in _operation_observers:
        observer(name, duration, exc)


#: Called after every timed operation (Sentry adds a breadcrumb, tracing a histogram point).
_operation_observers: list[Callable[[str, float, BaseException | None], None]] = []
#: Called for every record passed to ``log_metric`` (tracing feeds its histograms).
_metric_observers: list[Callable[[Metric], None]] = []
#: The tracer ``timed_operation`` starts child spans with; set by the plugin's lifespan.
_tracing: dict[str, trace.Tracer | None] = {"tracer": None}


@overload
def timed_operation(name: str) -> TimedOperation[Any]: ...
@overload
def timed_operation(name: str, operation: Callable[[], Awaitable[_T]]) -> Awaitable[tuple[_T, float]]: ...
@overload
def timed_operation(name: str, operation: Awaitable[_T]) -> Awaitable[tuple[_T, float]]: ...
def timed_operation(
    name: str, operation: Callable[[], Awaitable[_T]] | Awaitable[_T] | None = None
) -> TimedOperation[Any] | Awaitable[tuple[_T, float]]:
    """Time awaited work and write an ``operation_duration`` line for it.

    Three forms::

        async with timed_operation("graph_query") as op: ...   # op.duration afterwards
        @timed_operation("sync_calendar")                       # every call timed
        result, ms = await timed_operation("graph_query", run)  # like the seed's timedOperation
    """
    return TimedOperation(name, operation)
