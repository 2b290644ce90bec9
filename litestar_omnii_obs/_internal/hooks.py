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

One request, top to bottom: :meth:`RequestObserver._open` (used by the middleware and by
``after_exception``) builds the :class:`~litestar_omnii_obs._internal.exchange.Exchange` and calls
:func:`~litestar_omnii_obs._internal.exchange.trace_request`, which takes one of these ways:

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

The decision itself (ratio by trace id, parent-based) is :mod:`litestar_omnii_obs._internal.sampling`'s.
:meth:`RequestObserver.before_send` sets the status and adds ``X-Request-ID`` at the response
start, and calls :meth:`RequestObserver._close` at the last body byte (the record, the duration
point, :func:`~litestar_omnii_obs._internal.exchange.end_server_span`); the middleware's
:meth:`RequestObserver._finish` runs after the response is sent (a 5xx's ERROR line).
"""

from __future__ import annotations

import logging
import re
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal._compat import otel_context_var
from litestar_omnii_obs._internal.attributes import KNOWN_METHODS
from litestar_omnii_obs._internal.exchange import Exchange, end_server_span, trace_request
from litestar_omnii_obs._internal.scrubbing import SecretScrubber
from litestar_omnii_obs._internal.sentry import new_request_breadcrumbs, request_logger

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from litestar_omnii_obs._internal.config import ObservabilityConfig
    from litestar_omnii_obs._internal.durations import RequestDurations
    from litestar_omnii_obs._internal.tracing import Telemetry

__all__ = ["ObserverMiddleware", "RequestObserver"]

_logger = logging.getLogger("litestar_omnii_obs")

_KEY = "omnii_obs"  # the request's Exchange, kept in the ASGI scope


def _record_in_current(
    route: str, method: str, status: int, seconds: float, error: str | None, trace_hex: bytes, span_id: int
) -> None:
    """Where the latency record goes when no app is bound: the app this code runs in, else the default writer."""
    runtime.current().record_latency(route, method, status, seconds, error, trace_hex, span_id)


#: The context key OpenTelemetry keeps the current span under, learnt from its public API.
_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))


class _Route(msgspec.Struct):
    """One route handler as the middleware sees it (see :meth:`RequestObserver.middleware`)."""

    observed: bool  # an HTTP handler not opted out
    template: str  # its path template; "" for a mounted app (labelled by its mount path per request)
    check_path: bool  # whether a request's path must be checked against ``exclude_paths``


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
        self._opt_key = latency.opt_key
        self._unmatched = latency.unmatched_route
        self._record_latency = latency.enabled
        self._log_errors = latency.log_server_errors
        self._capture_statuses = config.sentry.capture_status_codes
        self._scrubber = SecretScrubber(config.sentry.scrub_keys)
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
        # Whether closing a request has more to do than the record: a histogram, or spans that can be recorded.
        sampling = None if telemetry is None else telemetry.sampling
        self._closes_telemetry = self._durations is not None or (
            telemetry is not None and (sampling is None or not sampling.never)
        )
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
        # OpenTelemetry's own context variable when it has one (the default): attach and detach without
        # the two function layers around it; another runtime context goes through the public API.
        context_var = otel_context_var()
        attach = otel_context.attach if context_var is None else context_var.set
        detach = otel_context.detach if context_var is None else context_var.reset
        current_context = otel_context.get_current if context_var is None else context_var.get
        handler: object = None  # the route handler this stack serves, learnt on its first request
        route = _Route(False, "", True)

        def attach_span(exchange: Exchange) -> object:
            """Make the request's span current: what ``trace.set_span_in_context(span, parent)`` makes, directly."""
            base = current_context() if exchange.parent is None else exchange.parent
            return attach(Context({**base, _SPAN_KEY: exchange.span}))

        async def observe(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal handler, route
            app_runtime = self._runtime
            if app_runtime is not None and app_runtime.needs_request_setup:
                self._set_up_request(app_runtime)
            if scope["route_handler"] is not handler:
                handler = scope["route_handler"]
                route = self._route(scope)
            exchange = self._open(scope, route) if route.observed else None
            if exchange is None:  # not observed (opted out, excluded), or our failure (logged): the request goes on
                await app(scope, receive, send)
                return
            token = None if exchange.span is None else attach_span(exchange)
            try:
                await app(scope, receive, send)
            except BaseException as exc:
                _remember(exchange, exc)
                raise
            finally:
                self._finish(scope, exchange, token, detach)

        return observe

    def _set_up_request(self, app_runtime: runtime.Runtime) -> None:
        """Per-request set-up, only when there is some (see ``Runtime.needs_request_setup``)."""
        if len(runtime.RUNNING) > 1:  # log_metric & co. in this request find this app (alone, it is found anyway)
            runtime.set_current(app_runtime)
        if app_runtime.sentry is not None:
            new_request_breadcrumbs()

    def _open(self, scope: Scope, route: _Route | None) -> Exchange | None:
        """Open one request: its :class:`Exchange` (start time, route label, method) and, traced, its ids and span.

        The one way a request is opened, by the middleware (``route``: its route handler's facts) or by
        :meth:`after_exception` (``None``: no route matched). ``None`` when the path is excluded, or
        when opening failed (logged once).
        """
        if (route is None or route.check_path) and self.is_excluded(scope["path"]):
            return None
        try:
            template = None if route is None else route.template or self._mount_label(scope)
            method: str = scope["method"]  # type: ignore[typeddict-item]  # an HTTP scope
            exchange = Exchange(
                perf_counter(),
                self._unmatched if template is None else template,
                method if method in KNOWN_METHODS else "_OTHER",
                in_middleware=route is not None,
            )
            if self._telemetry is not None:
                trace_request(self._telemetry, scope, exchange, template, self._scrubber)
        except Exception:  # our failure must not become the request's
            self._log_failure()
            return None
        scope[_KEY] = exchange  # type: ignore[literal-required]  # our key in the ASGI scope
        return exchange

    def _finish(self, scope: Scope, exchange: Exchange, token: object, detach: Any) -> None:
        """After the app returned: detach the span's context, close a response that never finished, log a 5xx."""
        if token is not None:
            try:
                detach(token)
            except (ValueError, RuntimeError):  # a token from another context: log it, spare the response
                self._log_failure()
        state: dict[str, Any] = scope  # type: ignore[assignment]
        if state.get(_KEY) is exchange:  # the response never finished
            self._close(state, exchange)
        if exchange.unlogged is not None:  # a server error: logged now that the client has its answer
            self._log_server_error(exchange, exchange.unlogged)

    def _route(self, scope: Scope) -> _Route:
        """What the middleware needs to know about the route handler of ``scope``, worked out once."""
        observed = scope["type"] == ScopeType.HTTP and scope["route_handler"].opt.get(self._opt_key, True) is not False
        template: str = scope.get("path_template", "")  # "" for a mounted app
        return _Route(observed, template, not template or self._may_exclude(template))

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
        if scope["type"] != ScopeType.HTTP:
            return
        state: dict[str, Any] = scope  # type: ignore[assignment]
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
                if not event.get("more_body", False):
                    self._close(state, exchange)
            elif kind == "http.response.start":
                exchange.status = event["status"]
                if exchange.trace_hex or exchange.exc is not None:
                    self._start_response(state, exchange, event)
        except Exception:
            self._log_failure()

    # ------------------------------------------------------------------ internals

    def _start_response(self, state: dict[str, Any], exchange: Exchange, event: dict[str, Any]) -> None:
        if exchange.trace_hex:
            headers = event.get("headers")
            request_id = (b"x-request-id", exchange.trace_hex)
            event["headers"] = [*headers, request_id] if headers else [request_id]
        if exchange.exc is not None and exchange.status in self._capture_statuses:
            self._report(state, exchange)

    def _close(self, state: dict[str, Any], exchange: Exchange) -> None:
        """Write the latency record and end the span; exactly once per request."""
        try:
            del state[_KEY]
            duration = perf_counter() - exchange.start
            status = exchange.status
            error = None if status < 500 else self._server_error(exchange)
            record = self._record
            if record is not None:
                record(exchange.route, exchange.method, status, duration, error, exchange.trace_hex, exchange.span_id)
            if self._closes_telemetry:
                self._close_telemetry(state, exchange, duration, error)
        except Exception:
            self._log_failure()

    def _close_telemetry(self, state: dict[str, Any], exchange: Exchange, duration: float, error: str | None) -> None:
        """The duration histogram and the server span's end (when either can exist, see :meth:`bind`)."""
        status = exchange.status
        durations = self._durations
        if durations is not None:
            error_type = error if error is not None or status < 500 else str(status)
            durations.record(duration, exchange.method, exchange.route, status, state["scheme"], error_type)
        end_server_span(exchange, error)

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
            "%s %s -> %d: %s (trace_id=%s)",
            exchange.method,
            exchange.route,
            exchange.status,
            type(exc).__qualname__,
            trace_id,
            exc_info=exc,
        )

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
