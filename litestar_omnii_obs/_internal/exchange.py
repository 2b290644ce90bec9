"""One request as the hooks see it (:class:`Exchange`), and how it joins a trace.

:func:`trace_request` gives a request its ids and, when sampled, its server span; the
usual request (no trace headers, not sampled) takes the shortest way: a trace id, its
hex form and a :class:`~litestar_omnii_obs._internal.sampling.DroppedSpan`, nothing else.
:func:`end_server_span` finishes a recorded span with the response's status.
"""

from __future__ import annotations

from time import time_ns
from typing import TYPE_CHECKING

import msgspec
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode

from litestar_omnii_obs._internal.attributes import error_type, server_span_attributes, span_name
from litestar_omnii_obs._internal.config import SamplingContext
from litestar_omnii_obs._internal.policy import RoutePolicy
from litestar_omnii_obs._internal.sampling import DroppedSpan, new_trace_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.types import Scope
    from opentelemetry.trace import Span, SpanContext

    from litestar_omnii_obs._internal.scrubbing import SecretScrubber
    from litestar_omnii_obs._internal.tracing import Telemetry

__all__ = ["Exchange", "decode_headers", "end_server_span", "trace_request"]

_PROPAGATION = frozenset({b"traceparent", b"tracestate", b"baggage"})


class Exchange(msgspec.Struct):
    """What one request needs between its first and last message.

    A msgspec ``Struct`` (never encoded) because one is built on every request and its
    constructor runs in C: a Python ``__init__`` measured about 0.5 µs more per request.
    """

    start: float
    route: str
    method: str
    policy: RoutePolicy  # the route's (see :mod:`.policy`): what is recorded, how it is sampled
    span: Span | None = None
    parent: Context | None = None  # the caller's context (baggage), kept current under the span
    # The span's ids, read without building its SpanContext: the trace id as the 32 hex digits that
    # X-Request-ID and the metric line both carry (formatted once), the span id (b"" and 0 without tracing).
    trace_hex: bytes = b""
    span_id: int = 0
    sampled: bool = False  # the trace is sampled (its spans recorded and exported): the line's "sampled"
    status: int = 500
    exc: BaseException | None = None
    # A server error to log with its traceback once the response is sent (by the middleware, after the
    # last byte: formatting a traceback takes 1-1.5 ms the client would otherwise wait for).
    unlogged: BaseException | None = None
    in_middleware: bool = True  # opened by the middleware (False: by after_exception, no middleware runs)
    enriched: dict[str, str | int | float | bool] | None = None  # ObservabilityConfig.enrich's answer


class _HeaderGetter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def decode_headers(headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes] | None = None) -> dict[str, str]:
    """ASGI request headers as text (latin-1, HTTP's own), only ``names`` when given; a repeated header's last wins."""
    if names is None:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in names}


def trace_request(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, route: str | None, scrubber: SecretScrubber
) -> None:
    """Give ``exchange`` its server span (or, unsampled, only its ids); ``route`` is None when no route matched."""
    if exchange.policy.own_sampling:
        _trace_by_rule(telemetry, scope, exchange, route, scrubber)
        return
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
    carrier = decode_headers(scope["headers"], _PROPAGATION)
    exchange.parent = extract(carrier, getter=_GETTER)
    if telemetry.sampling is None:
        _trace_foreign(telemetry, scope, exchange, route, scrubber)
        return
    sampled, trace_id, parent_context = telemetry.sampling.sample_joined(exchange.parent)
    exchange.trace_hex = b"%032x" % trace_id
    if sampled:
        _start_span(telemetry, scope, exchange, route, scrubber, trace_id, parent_context)
    else:
        dropped = exchange.span = DroppedSpan(trace_id, parent_context)
        exchange.span_id = dropped.span_id


def _trace_by_rule(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, route: str | None, scrubber: SecretScrubber
) -> None:
    """A route with its own rule (an ``opt`` rate or ``False``, or the user's ``traces_sampler``)."""
    headers = scope["headers"]
    if any(header in _PROPAGATION for header, _ in headers):
        carrier = decode_headers(headers, _PROPAGATION)
        exchange.parent = extract(carrier, getter=_GETTER)
    sampling = telemetry.sampling
    policy = exchange.policy
    if sampling is None:  # a provider that is not ours decides, unless the route wants no span at all
        if policy.traced:
            _trace_foreign(telemetry, scope, exchange, route, scrubber)
        else:
            dropped = exchange.span = DroppedSpan(new_trace_id())
            exchange.trace_hex, exchange.span_id = b"%032x" % dropped.trace_id, dropped.span_id
        return

    def context(parent: SpanContext | None) -> SamplingContext:
        return SamplingContext(
            route=route,
            method=exchange.method,
            parent_sampled=None if parent is None else parent.trace_flags.sampled,
            headers=decode_headers(headers),
        )

    sampled, trace_id, parent_context = sampling.decide(
        policy.trace_bound, telemetry.config.traces_sampler, exchange.parent, context
    )
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
    attributes = server_span_attributes(scope, method, route, scrubber, telemetry.proxies)
    span = telemetry.start_sampled(
        span_name(exchange.method, route), trace_id, parent_context, exchange.parent, attributes
    )
    exchange.span, exchange.span_id, exchange.sampled = span, span.get_span_context().span_id, True


def _trace_foreign(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, route: str | None, scrubber: SecretScrubber
) -> None:
    """A tracer provider that is not ours: the SDK starts the span and its sampler decides."""
    method: str = scope["method"]  # type: ignore[typeddict-item]  # only HTTP scopes get here
    span = telemetry.start_foreign(
        span_name(exchange.method, route),
        exchange.parent,
        lambda: server_span_attributes(scope, method, route, scrubber, telemetry.proxies),
    )
    context = span.get_span_context()
    exchange.span, exchange.trace_hex, exchange.span_id = span, b"%032x" % context.trace_id, context.span_id
    exchange.sampled = context.trace_flags.sampled


def keep_dropped_span(
    telemetry: Telemetry, scope: Scope, exchange: Exchange, scrubber: SecretScrubber, why: str, duration: float
) -> None:
    """Record the server span of a request the sampler dropped (a kept error or slow request), ids unchanged.

    Only the server span: its children were dropped with the decision. Marked ``omnii.kept`` with ``why``.
    """
    dropped = exchange.span
    spans = telemetry.server_spans
    if not isinstance(dropped, DroppedSpan) or spans is None:
        return
    route = exchange.route if exchange.in_middleware else None  # else no route matched
    method: str = scope["method"]  # type: ignore[typeddict-item]  # only HTTP scopes get here
    attributes = server_span_attributes(scope, method, route, scrubber, telemetry.proxies)
    attributes["omnii.kept"] = why
    if exchange.enriched:
        for key, value in exchange.enriched.items():
            attributes.setdefault(key, value)
    parent = dropped.parent
    start = time_ns() - int(duration * 1e9)
    exchange.span = spans.start(
        span_name(exchange.method, route),
        dropped.trace_id,
        dropped.span_id,
        parent,
        attributes,
        start,
        parent_context=exchange.parent,
    )
    exchange.sampled = True  # the line says a span of this trace is recorded


def end_websocket_span(exchange: Exchange, failed: bool) -> None:
    """End a websocket connection's recorded span: named by its route, its close code, the failure if any."""
    span = exchange.span
    if span is None or isinstance(span, NonRecordingSpan):
        return
    span.update_name(exchange.route)
    if exchange.status:
        span.set_attribute("websocket.close.code", exchange.status)
    if failed and exchange.exc is not None:
        span.record_exception(exchange.exc)
        span.set_attribute("error.type", type(exchange.exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR))
    span.end()


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
        span.set_attribute("error.type", error_type(exchange.exc, status) or str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()
