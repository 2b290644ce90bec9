"""One request as the hooks see it (:class:`Exchange`), and how it joins a trace.

:func:`trace_request` gives a request its ids and, when sampled, its server span; the
usual request (no trace headers, not sampled) takes the shortest way: a trace id, its
hex form and a :class:`~litestar_omnii_obs._internal.sampling.DroppedSpan`, nothing else.
:func:`end_server_span` finishes a recorded span with the response's status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode

from litestar_omnii_obs._internal.attributes import server_span_attributes, span_name
from litestar_omnii_obs._internal.sampling import DroppedSpan

if TYPE_CHECKING:
    from litestar.types import Scope
    from opentelemetry.trace import Span, SpanContext

    from litestar_omnii_obs._internal.scrubbing import SecretScrubber
    from litestar_omnii_obs._internal.tracing import Telemetry

__all__ = ["Exchange", "end_server_span", "trace_request"]

_PROPAGATION = frozenset({b"traceparent", b"tracestate", b"baggage"})


class Exchange(msgspec.Struct):
    """What one request needs between its first and last message.

    A msgspec ``Struct`` (never encoded) because one is built on every request and its
    constructor runs in C: a Python ``__init__`` measured about 0.5 µs more per request.
    """

    start: float
    route: str
    method: str
    span: Span | None = None
    parent: Context | None = None  # the caller's context (baggage), kept current under the span
    # The span's ids, read without building its SpanContext: the trace id as the 32 hex digits that
    # X-Request-ID and the metric line both carry (formatted once), the span id (b"" and 0 without tracing).
    trace_hex: bytes = b""
    span_id: int = 0
    status: int = 500
    exc: BaseException | None = None
    # A server error to log with its traceback once the response is sent (by the middleware, after the
    # last byte: formatting a traceback takes 1-1.5 ms the client would otherwise wait for).
    unlogged: BaseException | None = None
    in_middleware: bool = True  # opened by the middleware (False: by after_exception, no middleware runs)


class _HeaderGetter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def trace_request(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, route: str | None, scrubber: SecretScrubber
) -> None:
    """Give ``exchange`` its server span (or, unsampled, only its ids); ``route`` is None when no route matched."""
    for header, _ in scope["headers"]:
        if header in _PROPAGATION:  # the caller's trace context and baggage, parsed only when sent
            _trace_joined(telemetry, scope, exchange, route, scrubber)
            return
    sampling = telemetry.sampling
    if sampling is None:  # a provider that is not ours: its sampler decides
        _trace_foreign(telemetry, scope, exchange, route, scrubber)
        return
    sampled, trace_id = sampling.sample_root()
    exchange.trace_hex = b"%032x" % trace_id
    if sampled:
        _start_span(telemetry, scope, exchange, route, scrubber, trace_id, None)
    else:  # most requests in production: ids only, nothing else is computed
        dropped = exchange.span = DroppedSpan(trace_id)
        exchange.span_id = dropped.span_id


def _trace_joined(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, route: str | None, scrubber: SecretScrubber
) -> None:
    """A request with trace headers: the caller's trace and decision (and baggage) are followed."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATION}
    exchange.parent = extract(carrier, getter=_GETTER)
    if telemetry.sampling is None:
        _trace_foreign(telemetry, scope, exchange, route, scrubber)
        return
    sampled, trace_id, parent_context = telemetry.sample_joined(exchange.parent)
    exchange.trace_hex = b"%032x" % trace_id
    if sampled:
        _start_span(telemetry, scope, exchange, route, scrubber, trace_id, parent_context)
    else:
        dropped = exchange.span = DroppedSpan(trace_id, parent_context)
        exchange.span_id = dropped.span_id


def _start_span(
    telemetry: Telemetry,
    scope: Scope,
    exchange: Exchange,
    route: str | None,
    scrubber: SecretScrubber,
    trace_id: int,
    parent_context: SpanContext | None,
) -> None:
    """A sampled request: its server span, in the trace the decision was made for."""
    method: str = scope["method"]  # type: ignore[typeddict-item]  # only HTTP scopes get here
    attributes = server_span_attributes(scope, method, route, scrubber)
    span = telemetry.start_sampled(
        span_name(exchange.method, route), trace_id, parent_context, exchange.parent, attributes
    )
    exchange.span, exchange.span_id = span, span.get_span_context().span_id


def _trace_foreign(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, route: str | None, scrubber: SecretScrubber
) -> None:
    """A tracer provider that is not ours: the SDK starts the span and its sampler decides."""
    method: str = scope["method"]  # type: ignore[typeddict-item]  # only HTTP scopes get here
    span = telemetry.start_foreign(
        span_name(exchange.method, route),
        exchange.parent,
        lambda: server_span_attributes(scope, method, route, scrubber),
    )
    context = span.get_span_context()
    exchange.span, exchange.trace_hex, exchange.span_id = span, b"%032x" % context.trace_id, context.span_id


def end_server_span(exchange: Exchange, error: str | None) -> None:
    """End a recorded server span with the response's status (a dropped span has nothing to add)."""
    span = exchange.span
    if span is None or isinstance(span, NonRecordingSpan):
        return
    status = exchange.status
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        if exchange.exc is not None:
            span.record_exception(exchange.exc)
        span.set_attribute("error.type", error or str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()
