"""``log_metric`` and ``timed_operation``: the metric API a handler or job calls.

Both write to the metric writer of the app they run in (see
:mod:`litestar_omnii_obs._internal.runtime`), never block the event loop and never raise because
of a sink or of a record that cannot be encoded (that line alone is dropped, counted and
logged).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace

from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal.records import MetricRecord, OperationMetric, milliseconds

__all__ = [
    "TimedOperation",
    "flush_metrics",
    "log_metric",
    "timed_operation",
]

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")


def log_metric(metric: MetricRecord) -> None:
    """Write ``metric`` as one JSON line with timestamp, service, environment and trace ids.

    Goes to the sink of the app this code runs in. Never blocks the event loop. Graph-query
    and sync records also feed their OpenTelemetry histograms. ``metric`` is one of the
    package's records or your own subclass of :class:`~litestar_omnii_obs.MetricRecord` or
    :class:`~litestar_omnii_obs.TimedRecord`.

    Raises:
        TypeError: ``metric`` is not a metric record (an instance of a
            :class:`~litestar_omnii_obs.MetricRecord` subclass); nothing is written then.
            Nothing else raises here: a failing sink is reported once, and a record that cannot be
            encoded is dropped in the writer thread, counted and logged once per record type.
    """
    if not isinstance(metric, MetricRecord):
        raise TypeError(
            "log_metric expects a metric record (an instance of a litestar_omnii_obs.MetricRecord "
            f"subclass, e.g. ApiLatencyMetric), got {type(metric).__name__}"
        )
    runtime.current().record(metric)


def flush_metrics() -> None:
    """Write every line queued by the running apps now (shutdown does this by itself); never raises."""
    for running in runtime.running() or [runtime.current()]:
        running.writer.drain()


class TimedOperation(Generic[_T]):
    """Times work; use as ``async with`` or ``with``, as a decorator (async or plain functions), or ``await`` it.

    ``duration`` (milliseconds) can be read once the work has ended. A failure is recorded with
    ``outcome="error"`` and the exception's type name, then re-raised unchanged.
    """

    __slots__ = ("_duration", "_runtime", "_span", "_start", "_token", "name", "operation")

    def __init__(self, name: str, operation: Callable[[], Awaitable[_T]] | Awaitable[_T] | None = None) -> None:
        self.name = name
        self.operation = operation
        self._duration: float | None = None
        self._start = 0.0
        self._span: trace.Span | None = None
        self._token: object = None
        self._runtime: runtime.Runtime | None = None

    @property
    def duration(self) -> float:
        """Milliseconds the work took (3 decimals), readable after it ended (after the ``with`` block).

        Raises:
            RuntimeError: read before the work ended.
        """
        duration = self._duration
        if duration is None:
            raise RuntimeError(
                f"timed_operation({self.name!r}).duration was read before the operation ended; "
                "read it after the `with` / `async with` block"
            )
        return duration

    async def __aenter__(self) -> TimedOperation[_T]:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __enter__(self) -> TimedOperation[_T]:
        current = self._runtime = runtime.current()
        tracer = current.tracer
        if tracer is not None:
            self._span = tracer.start_span(self.name)
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration = self._duration = milliseconds(time.perf_counter() - self._start)
        span = self._span
        if span is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.set_attribute("omnii.operation.duration_ms", duration)
            if exc is not None:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            self._span = None
        current = self._runtime or runtime.current()
        if exc is None:
            metric = OperationMetric(operation=self.name, duration=duration)
        else:
            metric = OperationMetric(operation=self.name, duration=duration, outcome="error", error=type(exc).__name__)
        current.record(metric, None if span is None else span.get_span_context())
        current.operation_done(self.name, duration, exc)

    @overload
    def __call__(self, func: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
    @overload
    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]: ...
    def __call__(self, func: Callable[_P, Any]) -> Callable[_P, Any]:
        """Decorate a function, async or not, so that every call is timed under this name.

        The decorated function keeps its parameters and return type (for type checkers too).
        """
        name = self.name
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awaited(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                async with TimedOperation[Any](name):
                    return await func(*args, **kwargs)

            return awaited

        @functools.wraps(func)
        def called(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            with TimedOperation[Any](name):
                return func(*args, **kwargs)

        return called

    def __await__(self) -> Any:
        return self._run().__await__()

    async def _run(self) -> tuple[_T, float]:
        operation = self.operation
        if operation is None:
            raise TypeError("await timed_operation(name, operation) needs an operation to await")
        async with self:
            result = await (operation if not callable(operation) else operation())
        return result, self.duration


@overload
def timed_operation(name: str) -> TimedOperation[Any]: ...
@overload
def timed_operation(name: str, operation: Callable[[], Awaitable[_T]]) -> Awaitable[tuple[_T, float]]: ...
@overload
def timed_operation(name: str, operation: Awaitable[_T]) -> Awaitable[tuple[_T, float]]: ...
def timed_operation(
    name: str, operation: Callable[[], Awaitable[_T]] | Awaitable[_T] | None = None
) -> TimedOperation[Any] | Awaitable[tuple[_T, float]]:
    """Time work and write an ``operation_duration`` line for it.

    Three forms::

        async with timed_operation("graph_query") as op: ...   # op.duration afterwards (or plain ``with``)
        @timed_operation("sync_calendar")                       # every call timed, async or plain function
        result, ms = await timed_operation("graph_query", run)  # like the seed's timedOperation
    """
    return TimedOperation(name, operation)
