"""The per-request hooks: one latency record, one server span, one Sentry event per 5xx.

Litestar's ``before_request``/``after_response`` hooks (Elysia's onRequest and
onAfterResponse) miss requests: 404/405 never reach them, a route-level hook replaces
the app-level one, guards, exceptions and cache hits skip one or the other, and
``after_response`` runs after background tasks and never sees the status. So every
request is observed by three light pieces instead, each doing one job:

* :meth:`RequestObserver.middleware` (index 0 of the app's middleware, the outermost
  layer of every route) opens the request: start time, server span made current.
  Guards, exceptions, cache hits, streaming and route-level hooks all happen inside it.
* :meth:`RequestObserver.after_exception` opens requests no route matched (404/405,
  raised by the router before any middleware) and remembers the exception.
* :meth:`RequestObserver.before_send` (app-level, sees every message of every
  response) adds ``X-Request-ID``, reports the exception to Sentry when the status sent
  is a server error, and closes the request when the last body byte leaves, so
  background tasks are not timed.

If a response never completes (the client went away mid-stream), the middleware
closes the request on the way out. An error in this module is logged once and never
reaches the response.

One request, top to bottom. The middleware first takes its route handler's
:class:`~litestar_omnii_obs._internal.policy.RoutePolicy` (worked out once per handler from its ``opt``
and ``exclude_routes``; the only place that decides *whether* the line, the histogram point, the span
and the Sentry report happen). Not observed: the request goes on untouched. A websocket:
:meth:`RequestObserver._observe_websocket`. Otherwise :meth:`RequestObserver._open` (used by the
middleware and by ``after_exception``) builds the :class:`~litestar_omnii_obs._internal.exchange.Exchange`
and calls :func:`~litestar_omnii_obs._internal.exchange.trace_request`, which takes one of these ways:

=====================  ===============================  =====================================
the request            sampled (our provider)           dropped (our provider)
=====================  ===============================  =====================================
no trace headers       ``_start_span``: a ``ServerSpan`` ``DroppedSpan`` (ids only)
                       (SDK span with sentry-sdk's
                       processor)
trace headers          ``_trace_joined`` then            ``_trace_joined``: ``DroppedSpan``
                       ``_start_span`` (caller's trace)  in the caller's trace
provider not ours      ``_trace_foreign``: the SDK's     (its sampler decides)
                       tracer and sampler
=====================  ===============================  =====================================

A route with its own rule (an ``opt`` ``traces`` rate, or the user's ``traces_sampler``) goes through
``_trace_by_rule`` instead, which asks :meth:`.sampling.ServerSampling.decide` and then takes the same
two ways.

The decision itself (ratio by trace id, parent-based) is :mod:`litestar_omnii_obs._internal.sampling`'s.
:meth:`RequestObserver.before_send` sets the status, runs the user's ``enrich`` (guards and
authentication have run by then) and adds ``X-Request-ID`` at the response start, and calls
:meth:`RequestObserver._close` at the last body byte: the record, the duration point, a dropped span
kept for its status or duration (:func:`~litestar_omnii_obs._internal.exchange.keep_dropped_span`), then
:func:`~litestar_omnii_obs._internal.exchange.end_server_span`. The middleware's
:meth:`RequestObserver._finish` runs after the response is sent (a 5xx's ERROR line).
"""

from __future__ import annotations

import logging
import math
import re
from time import perf_counter
from typing import TYPE_CHECKING, Any

from litestar.connection import Request
from litestar.enums import ScopeType
from litestar.exceptions import WebSocketException
from msgspec.structs import replace
from opentelemetry import context as otel_context
from opentelemetry import trace

from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal.attributes import error_type, method_label
from litestar_omnii_obs._internal.exchange import (
    Exchange,
    end_server_span,
    end_websocket_span,
    keep_dropped_span,
    trace_request,
)
from litestar_omnii_obs._internal.headers import HeaderCapture
from litestar_omnii_obs._internal.policy import UNOBSERVED, RoutePolicy, default_policy, route_policy
from litestar_omnii_obs._internal.records import WebSocketMetric
from litestar_omnii_obs._internal.reporting import not_sent_note, request_logger
from litestar_omnii_obs._internal.sampling import DroppedSpan
from litestar_omnii_obs._internal.scrubbing import SecretScrubber

if TYPE_CHECKING:
    from contextvars import Token

    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from litestar_omnii_obs._internal.config import ObservabilityConfig
    from litestar_omnii_obs._internal.durations import RequestDurations
    from litestar_omnii_obs._internal.tracing import Telemetry

__all__ = ["ObserverMiddleware", "RequestObserver"]

_logger = logging.getLogger("litestar_omnii_obs")

_KEY = "omnii_obs"  # the request's Exchange, kept in the ASGI scope
_ENRICHED = (str, bool, int, float)  # the attribute values enrich may return; others are left out


def _record_in_current(
    route: str,
    method: str,
    status: int,
    seconds: float,
    error: str | None,
    trace_hex: bytes,
    span_id: int,
    sampled: bool,
    extra: dict[str, str | int | float | bool] | None,
) -> None:
    """Where the latency record goes when no app is bound: the app this code runs in, else the default writer."""
    runtime.current().record_latency(route, method, status, seconds, error, trace_hex, span_id, sampled, extra)


def _records_server_spans(telemetry: Telemetry) -> bool:
    """Whether a dropped request's span could be kept: our own ``ServerSpan``s, with a processor to take them."""
    spans = telemetry.server_spans
    return spans is not None and bool(spans.processors)


def _may_record_spans(telemetry: Telemetry | None) -> bool:
    """Whether any request's server span can be recorded (a provider not ours decides for itself)."""
    if telemetry is None:
        return False
    sampling = telemetry.sampling
    return sampling is None or not sampling.never


def _attach_span(exchange: Exchange) -> Token[Context]:
    """Make the request's span current, in the caller's context when it sent one (its baggage stays current).

    Through the public API: setting OpenTelemetry's context variable and building the ``Context``
    directly measured 0.21 µs less per traced request (0.59 against 0.38 µs, timeit), under the
    0.2 µs a private access must save for each of its two parts to stay.
    """
    return otel_context.attach(trace.set_span_in_context(exchange.span, exchange.parent))  # type: ignore[arg-type]


def _add_new_attributes(span: Span | None, attributes: dict[str, str | int | float | bool]) -> None:
    """Put ``attributes`` on a recorded span, except those it already has (the app's values stay)."""
    if span is not None and span.is_recording():
        present = getattr(span, "attributes", None) or {}
        span.set_attributes({k: v for k, v in attributes.items() if k not in present})


def _remember(exchange: Exchange, exc: BaseException) -> None:
    """The first exception a request raised is the one reported."""
    if exchange.exc is None:
        exchange.exc = exc


class ObserverMiddleware:
    """The middleware factory registered with Litestar, as an object.

    Some tools (sentry-sdk's LitestarIntegration) set attributes on middleware
    factories, which a bound method does not allow.
    """

    __slots__ = ("__dict__", "observer")

    def __init__(self, observer: RequestObserver) -> None:
        self.observer = observer

    def __call__(self, app: ASGIApp) -> ASGIApp:
        return self.observer.middleware(app)


class RequestObserver:
    """Holds the per-request logic; the plugin registers its three hooks."""

    def __init__(self, config: ObservabilityConfig) -> None:
        latency = config.latency
        self._exact = frozenset(p for p in latency.exclude_paths if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in latency.exclude_paths if p.endswith("*"))
        self._config = config
        self._enrich = config.enrich
        self._line_keys = config.latency.line_attributes
        self._enrich_failed = False
        self._unmatched = latency.unmatched_route
        self._unmatched_policy = default_policy(config)
        self._record_latency = latency.enabled
        self._log_errors = latency.log_server_errors
        self._capture_statuses = config.sentry.capture_status_codes
        tracing = config.tracing
        self._keep_statuses = tracing.keep_statuses
        self._keep_slower_than = math.inf if tracing.keep_slower_than_ms is None else tracing.keep_slower_than_ms / 1000
        self._keeps = bool(self._keep_statuses) or tracing.keep_slower_than_ms is not None
        self._scrubber = SecretScrubber(config.sentry.scrub_keys)
        self._headers = HeaderCapture.from_config(config, self._scrubber)
        self._runtime: runtime.Runtime | None = None
        self._telemetry: Telemetry | None = None
        self._durations: RequestDurations | None = None
        self._record: runtime.LatencyRecorder | None = None
        self._closes_telemetry = False
        self._failed = False
        self.bind(None, None)

    def bind(self, app_runtime: runtime.Runtime | None, telemetry: Telemetry | None) -> None:
        """Use this app's runtime and telemetry (the lifespan calls this at start-up and shutdown).

        Called after the runtime's observers are in place: where the latency record goes is settled here.
        """
        self._runtime = app_runtime
        self._telemetry = telemetry
        self._durations = None if telemetry is None else telemetry.request_duration
        self._keep = self._keeps and telemetry is not None and _records_server_spans(telemetry)
        # Whether closing a request has more to do than the record: a histogram, or spans that can be recorded.
        self._closes_telemetry = self._durations is not None or self._keep or _may_record_spans(telemetry)
        if not self._record_latency:
            self._record = None
        elif app_runtime is None:
            self._record = _record_in_current
        else:
            self._record = app_runtime.latency_recorder()

    def is_excluded(self, path: str) -> bool:
        """Whether ``path`` is in the configured exclusions (exact, or prefix with ``*``)."""
        return path in self._exact or path.startswith(self._prefixes)

    # ------------------------------------------------------------------ hooks

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware factory: the outermost layer of each route (see :class:`ObserverMiddleware`).

        Litestar builds one stack per route handler, so what depends only on the handler (HTTP or not,
        opted out, its route template, whether any of its paths could be excluded) is settled on the
        stack's first request and checked again only if another handler ever shows up.
        """
        handler: object = None  # the route handler this stack serves, learnt on its first request
        route = UNOBSERVED

        async def observe(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal handler, route
            app_runtime = self._runtime
            if app_runtime is not None and app_runtime.needs_request_setup:
                self._set_up_request(app_runtime, scope)
            if scope["route_handler"] is not handler:
                handler = scope["route_handler"]
                route = self._route(scope)
            if route.websocket:
                await self._observe_websocket(app, scope, receive, send, route)
                return
            exchange = self._open(scope, route) if route.observed else None
            if exchange is None:  # not observed (opted out, excluded), or our failure (logged): the request goes on
                await app(scope, receive, send)
                return
            token = None if exchange.span is None else _attach_span(exchange)
            state: dict[str, Any] = scope  # type: ignore[assignment]
            opened = exchange  # not Optional inside the closure

            async def send_then_close(message: Message) -> None:
                # Closed once the last byte is handed to the server, not before: the client has its whole
                # answer while the line, the duration point and the span end are made (10-40 µs), and the
                # server's writes of head and body follow each other as they do without the plugin.
                await send(message)
                if (
                    message["type"] == "http.response.body"
                    and not message.get("more_body", False)
                    and state.get(_KEY) is opened
                ):
                    self._close(state, opened)

            try:
                await app(scope, receive, send_then_close)
            except BaseException as exc:
                _remember(exchange, exc)
                raise
            finally:
                self._finish(scope, exchange, token)

        return observe

    async def _observe_websocket(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: RoutePolicy,
    ) -> None:
        """One websocket connection: a server span, a ``websocket_session`` record at the end, an error once.

        The handshake is an HTTP GET, so the span is opened as one (named by the route alone); the close
        code comes from the server's ``websocket.close`` or the client's disconnect.
        """
        handshake = {**scope, "method": "GET", "http_version": scope.get("http_version", "1.1")}  # optional in ASGI
        exchange = self._open(handshake, route)  # type: ignore[arg-type]
        if exchange is None:
            await app(scope, receive, send)
            return
        exchange.status = 0  # the close code, once seen
        exchange.method = "WEBSOCKET"  # in the ERROR line and Sentry's transaction; the span says GET (handshake)
        state: dict[str, Any] = scope  # type: ignore[assignment]
        state[_KEY] = exchange
        closed = False

        def close_once() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self._close_websocket(state, exchange)

        async def watch_send(message: Message) -> None:
            if message["type"] == "websocket.close":
                exchange.status = message.get("code", 1000)
                # Before the client sees the close (Litestar sends 4500 for a handler's exception, after
                # after_exception remembered it): its record, error report and span are done by then.
                close_once()
            await send(message)

        async def watch_receive() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "websocket.disconnect" and not exchange.status:
                exchange.status = message.get("code", 1005)
            return message

        token = None if exchange.span is None else _attach_span(exchange)
        try:
            await app(scope, watch_receive, watch_send)
        except BaseException as exc:
            _remember(exchange, exc)
            raise
        finally:
            close_once()  # the client went away first, or the exception leaves for an outer handler to close
            state.pop(_KEY, None)
            if token is not None:
                otel_context.detach(token)

    def _close_websocket(self, state: dict[str, Any], exchange: Exchange) -> None:
        """The connection's record, its failure (logged once, reported once) and its span's end."""
        try:
            exc = exchange.exc
            failed = exc if exc is not None and not isinstance(exc, WebSocketException) else None  # a close is no error
            app_runtime = self._runtime
            if app_runtime is not None and exchange.policy.latency:
                self._record_websocket(app_runtime, exchange, failed)
            if failed is not None:
                self._log_server_error(exchange, failed)
                self._report(state, exchange)
            end_websocket_span(exchange, failed is not None)
        except Exception:
            self._log_failure()

    @staticmethod
    def _record_websocket(app_runtime: runtime.Runtime, exchange: Exchange, failed: BaseException | None) -> None:
        span = exchange.span
        record = WebSocketMetric(
            route=exchange.route,
            duration=(perf_counter() - exchange.start) * 1000,
            close_code=exchange.status or None,
            error=None if failed is None else type(failed).__qualname__,
        )
        app_runtime.record(record, None if span is None else span.get_span_context())

    def _set_up_request(self, app_runtime: runtime.Runtime, scope: Scope) -> None:
        """Per-request set-up, only when there is some (see ``Runtime.needs_request_setup``)."""
        if len(runtime.RUNNING) > 1:  # log_metric & co. in this request find this app (alone, it is found anyway)
            runtime.set_current(app_runtime)
        if app_runtime.sentry is not None:
            app_runtime.sentry.enter_request(scope)  # its own Sentry scope; capture_error sees the request

    def _open(self, scope: Scope, route: RoutePolicy | None) -> Exchange | None:
        """Open one request: its :class:`Exchange` (start time, route label, method) and, traced, its ids and span.

        The one way a request is opened, by the middleware (``route``: its route handler's facts) or by
        :meth:`after_exception` (``None``: no route matched). ``None`` when the path is excluded, or
        when opening failed (logged once).
        """
        if (route is None or route.check_path) and self.is_excluded(scope["path"]):
            return None
        try:
            method: str = scope["method"]  # type: ignore[typeddict-item]  # an HTTP scope
            if route is None:  # no route matched (after_exception)
                template = None
                exchange = Exchange(perf_counter(), self._unmatched, method_label(method), self._unmatched_policy)
                exchange.in_middleware = False
            else:
                template = route.template or self._mount_label(scope)
                exchange = Exchange(perf_counter(), template, method_label(method), route)
            if self._telemetry is not None:
                self._trace(scope, exchange, template)
        except Exception:  # our failure must not become the request's
            self._log_failure()
            return None
        scope[_KEY] = exchange  # type: ignore[literal-required]  # our key in the ASGI scope
        return exchange

    def _trace(self, scope: Scope, exchange: Exchange, template: str | None) -> None:
        """The request's ids and span (:func:`.exchange.trace_request`), and its captured request headers."""
        assert self._telemetry is not None
        trace_request(self._telemetry, scope, exchange, template, self._scrubber)
        if self._headers is not None:  # header capture (README "Choosing what to observe"); None unless configured
            self._headers.on_request(scope, exchange.span)

    def _finish(self, scope: Scope, exchange: Exchange, token: Token[Context] | None) -> None:
        """After the app returned: detach the span's context, close a response that never finished, log a 5xx."""
        if token is not None:
            otel_context.detach(token)  # a token from another context is logged there, never raised
        state: dict[str, Any] = scope  # type: ignore[assignment]
        if state.get(_KEY) is exchange:  # the response never finished
            self._close(state, exchange)
        if exchange.unlogged is not None:  # a server error: logged now that the client has its answer
            self._log_server_error(exchange, exchange.unlogged)

    def _route(self, scope: Scope) -> RoutePolicy:
        """The policy of the route handler of ``scope`` (see :mod:`.policy`), worked out once per handler."""
        kind = scope["type"]
        if kind != ScopeType.HTTP and kind != ScopeType.WEBSOCKET:
            return UNOBSERVED
        template: str = scope.get("path_template", "")  # "" for a mounted app
        handler = scope["route_handler"]
        try:
            check_path = not template or self._may_exclude(template)
            policy = route_policy(handler, template, check_path, self._config, template)
            return policy if kind == ScopeType.HTTP or not policy.observed else replace(policy, websocket=True)
        except Exception:  # checked at start-up (check_routes); an app started without our lifespan gets here
            self._log_failure()
            return UNOBSERVED

    def _may_exclude(self, template: str) -> bool:
        """Whether some request path routed to ``template`` could be in ``exclude_paths``.

        Conservative: every parameter may stand for anything (slashes included), the path may carry
        a ``root_path`` in front and a trailing slash; prefix exclusions are always checked.
        """
        if self._prefixes:
            return True
        pattern = ".*".join(re.escape(literal) for literal in re.split(r"\{[^}]*\}", template))
        matcher = re.compile(f".*{pattern}/?", re.DOTALL)
        return any(matcher.fullmatch(path) for path in self._exact)

    async def after_exception(self, exc: BaseException, scope: Scope) -> None:
        """Remember the exception; open requests that failed before reaching a route."""
        state: dict[str, Any] = scope  # type: ignore[assignment]
        if scope["type"] != ScopeType.HTTP:
            websocket: Exchange | None = state.get(_KEY)  # a websocket handler's exception (then closed, 4500)
            if websocket is not None:
                _remember(websocket, exc)
            return
        exchange: Exchange | None = state.get(_KEY)
        if exchange is None and "path_template" not in state:
            if self._runtime is not None and len(runtime.RUNNING) > 1:
                runtime.set_current(self._runtime)
            exchange = self._open(scope, None)
        if exchange is not None:
            exchange.exc = exc

    async def before_send(self, message: Message, scope: Scope) -> None:
        """Add ``X-Request-ID``, report 5xx errors, close the request at the last byte."""
        state: dict[str, Any] = scope  # type: ignore[assignment]
        exchange: Exchange | None = state.get(_KEY)
        if exchange is None:
            return
        event: dict[str, Any] = message  # type: ignore[assignment]
        try:
            kind = event["type"]
            if kind == "http.response.body":
                if not exchange.in_middleware and not event.get("more_body", False):
                    self._close(state, exchange)  # the middleware's requests close after the send
            elif kind == "http.response.start":
                exchange.status = event["status"]
                if self._enrich is not None:
                    self._enrich_request(state, exchange)
                if exchange.trace_hex or exchange.exc is not None:
                    self._start_response(state, exchange, event)
                if self._headers is not None:
                    self._headers.on_response(message, exchange.span)
        except Exception:
            self._log_failure()

    # ------------------------------------------------------------------ internals

    def _enrich_request(self, state: dict[str, Any], exchange: Exchange) -> None:
        """The user's ``enrich`` (guards and authentication have run): onto the span, kept for Sentry and the line."""
        assert self._enrich is not None
        try:
            answer = self._enrich(Request(state))  # type: ignore[arg-type]  # our view of the same scope
            enriched = {k: v for k, v in answer.items() if isinstance(k, str) and isinstance(v, _ENRICHED)}
        except Exception:
            if not self._enrich_failed:
                self._enrich_failed = True
                _logger.exception("ObservabilityConfig.enrich raised; the response goes on (further errors not logged)")
            return
        exchange.enriched = enriched
        _add_new_attributes(exchange.span, enriched)

    def _start_response(self, state: dict[str, Any], exchange: Exchange, event: dict[str, Any]) -> None:
        if exchange.trace_hex:
            headers = event.get("headers")
            request_id = (b"x-request-id", exchange.trace_hex)
            event["headers"] = [*headers, request_id] if headers else [request_id]
        if exchange.exc is not None:
            statuses = exchange.policy.sentry_statuses
            if exchange.status in (self._capture_statuses if statuses is None else statuses):
                self._report(state, exchange)

    def _close(self, state: dict[str, Any], exchange: Exchange) -> None:
        """Write the latency record and end the span; exactly once per request."""
        try:
            del state[_KEY]
            duration = perf_counter() - exchange.start
            status = exchange.status
            error = None if status < 500 else self._server_error(exchange)
            if self._keep and type(exchange.span) is DroppedSpan and exchange.policy.traced:
                self._keep_if_wanted(state, exchange, duration)  # before the line, which then says "sampled"
            record = self._record
            if record is not None and exchange.policy.latency:
                record(
                    exchange.route,
                    exchange.method,
                    status,
                    duration,
                    error,
                    exchange.trace_hex,
                    exchange.span_id,
                    exchange.sampled,
                    None if exchange.enriched is None else self._line_extra(exchange.enriched),
                )
            if self._closes_telemetry:
                self._close_telemetry(state, exchange, duration, error)
        except Exception:
            self._log_failure()

    def _line_extra(self, enriched: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool] | None:
        """The enriched keys the line carries (``latency.line_attributes``)."""
        extra = {key: enriched[key] for key in self._line_keys if key in enriched}
        return extra or None

    def _close_telemetry(self, state: dict[str, Any], exchange: Exchange, duration: float, error: str | None) -> None:
        """The duration histogram and the server span's end (when either can exist, see :meth:`bind`); a kept
        span was started by :meth:`_close` just before."""
        status = exchange.status
        durations = self._durations
        if durations is not None and exchange.policy.metrics:
            kind = None if status < 500 else error_type(exchange.exc, status)  # qualified type name, or the status
            durations.record(duration, exchange.method, exchange.route, status, state["scheme"], kind)
        end_server_span(exchange, error)

    def _keep_if_wanted(self, state: dict[str, Any], exchange: Exchange, duration: float) -> None:
        """Record the span of a dropped request that ended in a kept status or took too long.

        See README "Choosing what to observe"."""
        if exchange.status in self._keep_statuses:
            why = "status"
        elif duration > self._keep_slower_than:
            why = "slow"
        else:
            return
        assert self._telemetry is not None  # self._keep implies it
        keep_dropped_span(self._telemetry, state, exchange, self._scrubber, why, duration)  # type: ignore[arg-type]
        if self._headers is not None:  # the request's captured headers (its response's were not kept)
            self._headers.on_request(state, exchange.span)  # type: ignore[arg-type]

    def _server_error(self, exchange: Exchange) -> str | None:
        """A 5xx: the exception's type name (``None`` if none was raised), logged once with its traceback."""
        exc = exchange.exc
        if exc is None:
            return None
        if self._log_errors:
            if exchange.in_middleware:
                exchange.unlogged = exc  # the middleware logs it after the last byte is sent
            else:
                self._log_server_error(exchange, exc)
        return type(exc).__qualname__

    def _log_server_error(self, exchange: Exchange, exc: BaseException) -> None:
        trace_id = exchange.trace_hex.decode() or "-"
        request_logger.error(
            "%s %s -> %d: %s (trace_id=%s)%s",
            exchange.method,
            exchange.route,
            exchange.status,
            type(exc).__qualname__,
            trace_id,
            self._not_sent(exchange, exc),
            exc_info=exc,
        )

    def _not_sent(self, exchange: Exchange, exc: BaseException) -> str:
        """Why Sentry does not get ``exc`` (for its ERROR line), or ``""``; a websocket's close code is no status."""
        if exchange.policy.websocket:
            return not_sent_note(self._runtime, exc, None, None)
        return not_sent_note(self._runtime, exc, exchange.status, exchange.policy.sentry_statuses)

    def _report(self, state: dict[str, Any], exchange: Exchange) -> None:
        reporter = None if self._runtime is None else self._runtime.sentry
        if reporter is None or exchange.exc is None:
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in state["headers"]}
        host = headers.get("host", "")
        span = exchange.span
        user = state.get("user")
        user_id = getattr(user, "id", None) if not isinstance(user, dict) else user.get("id")
        # The request's span is current, so the event carries its trace and span id.
        token = None if span is None else otel_context.attach(trace.set_span_in_context(span))
        try:
            reporter.capture_request_error(
                exchange.exc,
                method=exchange.method,
                route=exchange.route,
                url=f"{state['scheme']}://{host}{state.get('root_path', '')}{state['path']}",
                query_string=state.get("query_string", b"").decode("latin-1"),
                status=exchange.status,
                headers=headers,
                user_id=None if user_id is None else str(user_id),
                trace_id=exchange.trace_hex.decode() or None,
                enriched=exchange.enriched,
            )
        finally:
            if token is not None:
                otel_context.detach(token)

    def _mount_label(self, scope: Scope) -> str:
        """Litestar leaves ``path_template`` empty for mounted apps: use the mount path."""
        paths: list[str] = sorted(scope["route_handler"].paths, key=len, reverse=True)
        raw = scope.get("raw_path", b"").decode("latin-1")
        return next((p for p in paths if raw.startswith(p)), paths[0])

    def _log_failure(self) -> None:
        if not self._failed:
            self._failed = True
            _logger.exception("observing a request failed; the response goes on (further failures not logged)")
