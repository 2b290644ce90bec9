"""What every app in one process shares: OpenTelemetry's global tracer provider and the log-record factory.

OpenTelemetry's global tracer provider can be set once per process, and users' own
``trace.get_tracer(...)`` spans should nest under the request span of whichever app
serves the request. So the global provider, set once, is :data:`APP_TRACER_PROVIDER`:
it hands out tracers that delegate to the provider of the app current in that context
(see :mod:`litestar_omnii_obs._internal.runtime`). No app's own provider is ever installed
globally, so none is reused after it was shut down.

The log-record factory that adds ``trace_id``/``span_id`` is installed once while any
app runs and restored when the last one stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from litestar_omnii_obs._internal import runtime

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanKind
    from opentelemetry.util.types import Attributes

    from litestar_omnii_obs._internal._compat import AgnosticContextManager

__all__ = ["APP_TRACER_PROVIDER", "log_correlation", "route_global_provider"]


class _AppTracer(trace.Tracer):
    """A tracer that starts spans with the provider of the app current in this context."""

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Attributes) -> None:
        self._args = (name, version, schema_url, attributes)
        self._tracers: dict[int, tuple[TracerProvider, trace.Tracer]] = {}

    def _delegate(self) -> trace.Tracer:
        provider = runtime.current().tracer_provider
        if provider is None:
            return trace.NoOpTracer()
        cached = self._tracers.get(id(provider))
        if cached is None or cached[0] is not provider:
            name, version, schema_url, attributes = self._args
            cached = self._tracers[id(provider)] = (
                provider,
                provider.get_tracer(name, version, schema_url, attributes),
            )
        return cached[1]

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self._delegate().start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> AgnosticContextManager[Span]:
        return self._delegate().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )


class _AppTracerProvider(trace.TracerProvider):
    """OpenTelemetry's global provider while this package is in charge of it."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        return _AppTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


APP_TRACER_PROVIDER = _AppTracerProvider()


def route_global_provider() -> None:
    """Make :data:`APP_TRACER_PROVIDER` OpenTelemetry's global provider, if nobody set one."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(APP_TRACER_PROVIDER)


class _LogCorrelation:
    """Adds ``trace_id``/``span_id`` to log records; installed once while any app runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.previous: Callable[..., logging.LogRecord] | None = None

    def factory(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        assert self.previous is not None
        record = self.previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        else:
            record.trace_id = record.span_id = ""
        return record

    def acquire(self) -> Callable[[], None]:
        with self.lock:
            self.users += 1
            if self.users == 1:
                self.previous = logging.getLogRecordFactory()
                logging.setLogRecordFactory(self.factory)
        released = False

        def release() -> None:
            nonlocal released
            with self.lock:
                if released:
                    return
                released = True
                self.users -= 1
                if self.users == 0 and logging.getLogRecordFactory() == self.factory and self.previous:
                    logging.setLogRecordFactory(self.previous)

        return release


log_correlation = _LogCorrelation()
