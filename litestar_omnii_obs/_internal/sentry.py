"""Errors to Sentry: init from the lifespan, one event per server error, secrets scrubbed.

sentry-sdk is initialised in the plugin's lifespan, after ``Litestar(...)`` was built,
so its auto-enabled ``LitestarIntegration`` could not patch this app anyway; the
plugin captures through Litestar's own hooks instead and turns framework
auto-instrumentation off (``auto_enabling_integrations=False``).

Performance data: by default (``sentry.traces="otlp"``) the spans the plugin already
exports also go to Sentry's OTLP traces endpoint (see :mod:`litestar_omnii_obs._internal.otlp`),
and error events carry the trace and span id of the OpenTelemetry span that was
current, through sentry-sdk's external propagation context. ``"sdk"`` uses
sentry-sdk's ``SentrySpanProcessor`` instead, for Sentry servers without OTLP ingestion.

sentry-sdk keeps one client per process. The first app that starts with a DSN
initialises it; another app in the same process shares it (a warning names the
settings that differ), and the client is closed when the last such app stops.

Everything that leaves the process goes through :class:`EventSecretScrubber`, built on
sentry-sdk's :class:`~sentry_sdk.scrubber.EventScrubber`: keys *containing* a
denylisted word are redacted, recursively, in request headers, cookies, body,
breadcrumbs, extra, user, frame variables and spans (by ``EventScrubber``), and in
tags, contexts, the query string and the URL (added here).

The order every error event goes through, last word ours:

1. sentry-sdk's event processors (scope data, integrations, the request context added here);
2. our scrubbing (:class:`EventSecretScrubber` as sentry-sdk's ``event_scrubber``);
3. the app's own ``before_send``: ``SentryConfig.before_send``, else the one given to an earlier
   ``sentry_sdk.init`` (the plugin's own init would otherwise replace it). Returning ``None``
   drops the event: the app's choice, counted by sentry-sdk as filtered, never as lost. If the
   hook raises (or returns something else than an event), that is logged once and the event is
   sent as the hook left it: an error report is not lost to a bug in its filter, and step 4
   still runs;
4. a last scrub pass (:meth:`SentryReporter.before_send`): secret-looking keys and this request's
   secret values, wherever a processor or the app's hook put them.

Transactions (``traces="sdk"`` only) take the same steps 3 and 4 with ``before_send_transaction``.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypedDict

import sentry_sdk
from litestar.enums import ScopeType
from opentelemetry import trace
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.scope import Scope as SentryScope
from sentry_sdk.scope import register_external_propagation_context, remove_external_propagation_context

from litestar_omnii_obs._internal.attributes import method_label
from litestar_omnii_obs._internal.config import ObservabilityConfig, redact_url
from litestar_omnii_obs._internal.event_scrubbing import EventSecretScrubber
from litestar_omnii_obs._internal.reporting import (
    capture_error,
    request_logger,
    request_scope,
    start_sentry,
)
from litestar_omnii_obs._internal.scrubbing import DEFAULT_SCRUB_KEYS
from litestar_omnii_obs._internal.sentry_transport import QuietHttpTransport

if TYPE_CHECKING:
    from litestar.types import Scope
    from opentelemetry.sdk.trace import SpanProcessor
    from sentry_sdk.transport import Transport

    from litestar_omnii_obs._internal._compat import Event, Hint
    from litestar_omnii_obs._internal.config import SentryHook

__all__ = [
    "DEFAULT_SCRUB_KEYS",
    "EventSecretScrubber",
    "SentryReporter",
    "capture_error",
    "join_shared_client",
    "start_sentry",
]

_logger = logging.getLogger("litestar_omnii_obs")
#: Where a failing ``before_send`` of the app is logged; sentry-sdk ignores it, so the line never becomes an
#: event that would meet the failing hook again.
hook_logger = logging.getLogger("litestar_omnii_obs.sentry_hooks")

#: Every part of a serialised event a ``before_send`` hook may have written to, for the pass after it.
_EVENT_SECTIONS = ("request", "extra", "contexts", "tags", "user", "breadcrumbs", "exception", "threads", "spans")

#: Secret values of the request being reported, blanked anywhere in its event (set during capture).
_request_secrets: ContextVar[frozenset[str]] = ContextVar("omnii_obs_request_secrets", default=frozenset())


def _resolve_error_types(names: tuple[str, ...]) -> list[type[BaseException] | str]:
    """``"asyncio.CancelledError"`` -> the class (so subclasses match too); unknown names stay strings."""
    resolved: list[type[BaseException] | str] = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name) if module_name else builtins, attr)
        except (ImportError, AttributeError):
            found = None
        if isinstance(found, type) and issubclass(found, BaseException):
            resolved.append(found)
        else:
            resolved.append(name)
    return resolved


def _otel_propagation_context() -> tuple[str, str] | None:
    """The current OpenTelemetry span's ids, so an error event links to its trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class RequestDetails(TypedDict):
    """What an error event says of its request (see :func:`request_details`)."""

    method: str
    route: str
    url: str
    query_string: str
    headers: dict[str, str]
    user_id: str | None


def request_details(scope: Scope, method: str, route: str) -> RequestDetails:
    """The request part of an error event, from the ASGI ``scope``: URL, query, headers, ``request.user``'s id.

    Nothing is scrubbed here: :meth:`SentryReporter.capture_request_error` scrubs it all (one rule).
    """
    state: Mapping[str, Any] = scope
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in state["headers"]}
    user = state.get("user")
    user_id = user.get("id") if isinstance(user, dict) else getattr(user, "id", None)
    return {
        "method": method,
        "route": route,
        "url": f"{state['scheme']}://{headers.get('host', '')}{state.get('root_path', '')}{state['path']}",
        "query_string": state.get("query_string", b"").decode("latin-1"),
        "headers": headers,
        "user_id": None if user_id is None else str(user_id),
    }


def breadcrumb(name: str, duration: float, exc: BaseException | None) -> None:
    """``timed_operation`` observer: a breadcrumb on sentry-sdk's isolation scope (the request's own, in one)."""
    sentry_sdk.add_breadcrumb(
        {
            "category": "timed_operation",
            "message": f"{name} {'failed' if exc else 'ok'} in {duration:.1f} ms",
            "level": "error" if exc else "info",
            "data": {"operation": name, "duration_ms": round(duration, 3), "outcome": "error" if exc else "ok"},
        }
    )


class SentryReporter:
    """One app's view of Sentry: what it reports and how, on the process's shared client."""

    def __init__(
        self,
        config: ObservabilityConfig,
        scrubber: EventSecretScrubber,
        init_hooks: tuple[SentryHook | None, SentryHook | None] = (None, None),
    ) -> None:
        self.config = config
        self.scrubber = scrubber
        self.enabled = True
        self.init_hooks = init_hooks
        """``before_send`` / ``before_send_transaction`` found on an earlier ``sentry_sdk.init``."""
        self.user_before_send = config.sentry.before_send or init_hooks[0]
        self.user_before_send_transaction = config.sentry.before_send_transaction or init_hooks[1]
        self._hook_failed = False

    @staticmethod
    def enter_request(scope: Scope) -> None:
        """Per-request set-up while Sentry is on (the middleware calls this first).

        The request gets its own copy of sentry-sdk's isolation scope: what the app sets during it
        (``sentry_sdk.set_user``, ``set_tag``, breadcrumbs, ``timed_operation``'s) stays on its events,
        as with sentry-sdk's own framework integrations. Each request runs in its own task (its own copy
        of the context), so the copy goes away with the request: about 1.2 µs (fork) plus 0.1 µs (the
        context variable). The ASGI ``scope`` is kept for ``capture_error`` (read only when it reports).
        """
        SentryScope.set_isolation_scope(SentryScope.get_isolation_scope().fork())
        request_scope.set(scope)

    def before_send(self, event: Event, hint: Hint) -> Event | None:
        """sentry-sdk's ``before_send``: the app's hook, then the last scrub pass (the order: module docs)."""
        scrubber = self.scrubber
        hook = self.user_before_send
        if hook is not None:
            changed = self._run_app_hook(hook, "before_send", event, hint)
            if changed is None:
                return None  # the app dropped it
            event = changed
            self._scrub_after_app_hook(event)
        for section in ("extra", "contexts", "tags", "user"):
            scrubber.redact_plain(event.get(section))
        secrets = _request_secrets.get()
        if secrets:
            scrubber.redact_values(event, secrets)
        return event

    def before_send_transaction(self, event: Event, hint: Hint) -> Event | None:
        """sentry-sdk's ``before_send_transaction`` (set only when the app has one): its hook, then a scrub pass."""
        hook = self.user_before_send_transaction
        changed = event if hook is None else self._run_app_hook(hook, "before_send_transaction", event, hint)
        if changed is not None:
            self._scrub_after_app_hook(changed)
        return changed

    def _run_app_hook(self, hook: SentryHook, name: str, event: Event, hint: Hint) -> Event | None:
        """The app's hook's verdict; if it fails, the event as the hook left it (logged once)."""
        try:
            changed: object = hook(event, hint)
        except Exception:
            self._app_hook_failed(f"your Sentry {name} hook raised")
            return event
        if changed is not None and not isinstance(changed, dict):
            self._app_hook_failed(f"your Sentry {name} hook returned {type(changed).__name__}, not an event or None")
            return event
        return changed  # type: ignore[return-value]  # a dict: the event it changed or built

    def _app_hook_failed(self, what: str) -> None:
        if not self._hook_failed:
            self._hook_failed = True
            hook_logger.error(
                "%s; the event is sent as the hook left it, scrubbed (further failures are not logged)",
                what,
                exc_info=True,
            )

    def _scrub_after_app_hook(self, event: Event) -> None:
        """What the app's hook added is scrubbed as the rest was: secret-looking keys, secret query parameters."""
        scrubber = self.scrubber
        for section in _EVENT_SECTIONS:
            scrubber.redact_plain(event.get(section))
        scrubber.scrub_request_query(event)

    def capture(
        self,
        exc: BaseException,
        user_id: str | int | None = None,
        tags: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        """``capture_error``: ``exc`` with the user, tags and extra given; inside a request, with its context too."""
        if not self.enabled:
            return None
        request = request_scope.get()
        with sentry_sdk.new_scope() as scope:
            if user_id is not None:
                scope.set_user({"id": str(user_id)})
            for key, value in (tags or {}).items():
                scope.set_tag(key, value)
            for key, value in (extra or {}).items():
                scope.set_extra(key, value)
            if request is not None and request["type"] == ScopeType.HTTP:
                return self._capture_in_request(exc, request)
            return sentry_sdk.capture_exception(exc)

    def _capture_in_request(self, exc: BaseException, request: Scope) -> str | None:
        """As a server error's event: the request's transaction (route template), route tag and scrubbed data."""
        method: str = request["method"]  # type: ignore[typeddict-item]  # an HTTP scope
        route = request.get("path_template") or request["path"]
        context = trace.get_current_span().get_span_context()
        trace_id = f"{context.trace_id:032x}" if context.is_valid else None
        details = request_details(request, method_label(method), route)
        return self.capture_request_error(exc, **details, status=None, trace_id=trace_id)

    def capture_request_error(
        self,
        exc: BaseException,
        *,
        method: str,
        route: str,
        url: str,
        query_string: str,
        status: int | None,
        headers: Mapping[str, str],
        user_id: str | None,
        trace_id: str | None,
        enriched: Mapping[str, str | int | float | bool] | None = None,
    ) -> str | None:
        """Report an exception that became a server error, with its request's context.

        ``status`` is ``None`` for ``capture_error`` inside a request (no response yet).

        ``enriched`` (``ObservabilityConfig.enrich``'s result) becomes tags, ``user.id`` the user when PII
        is allowed (without PII, no ``user.*`` key leaves as a tag either); neither replaces a tag or user
        the app set on its scope.
        """
        if not self.enabled:
            return None
        with sentry_sdk.new_scope() as scope:
            scope.set_transaction_name(f"{method} {route}")
            scope.set_tag("http.route", route)
            if status is not None:
                scope.set_tag("http.status_code", str(status))
                scope.set_context("response", {"status_code": status})
            if trace_id:
                scope.set_tag("trace_id", trace_id)
            pii = self.config.sentry.send_default_pii  # request-derived user data is PII
            if enriched is not None and "user.id" in enriched:  # the app's own answer wins over request.user
                user_id = str(enriched["user.id"])
            request = {"method": method, "url": url, "query_string": query_string, "headers": dict(headers)}

            def add_request(event: Event, hint: Hint) -> Event:
                # Event processors run after the scope's tags and user are applied: what the app set stays.
                event["request"] = dict(request)
                if enriched:
                    tags = event.setdefault("tags", {})
                    for key, value in enriched.items():
                        if pii or not key.startswith("user."):
                            tags.setdefault(key, str(value))
                if pii and user_id is not None and not event.get("user"):
                    event["user"] = {"id": user_id}
                return event

            scope.add_event_processor(add_request)
            token = _request_secrets.set(self.scrubber.secret_values(headers, query_string))
            try:
                return sentry_sdk.capture_exception(exc)
            finally:
                _request_secrets.reset(token)

    def skip_reason(self, exc: BaseException, status: int | None, statuses: frozenset[int] | None = None) -> str | None:
        """Why a server error's exception is not sent to Sentry, or ``None`` when it is.

        ``status``: ``None`` where no HTTP status applies (a websocket); ``statuses``: the route's own
        ``sentry_statuses`` (``None``: ``capture_status_codes``).
        """
        if not self.enabled:
            return "Sentry is shutting down"
        if status is not None:
            if statuses is not None:
                if status not in statuses:
                    return f"status {status} is not in this route's sentry_statuses"
            elif status not in self.config.sentry.capture_status_codes:
                return f"status {status} is not in capture_status_codes (OMNII_OBS_SENTRY_CAPTURE_STATUS)"
        return self._ignored(type(exc))

    def _ignored(self, kind: type[BaseException]) -> str | None:
        """Why ``kind`` is in ``ignore_errors`` (by name, or as a subclass of one), or ``None``."""
        names = self.config.sentry.ignore_errors
        for name, ignored in zip(names, _resolve_error_types(names), strict=True):
            if isinstance(ignored, str):
                if ignored not in (kind.__name__, f"{kind.__module__}.{kind.__name__}"):
                    continue
            elif not issubclass(kind, ignored):
                continue
            exact = isinstance(ignored, str) or kind is ignored
            what = kind.__qualname__ if exact else f"{kind.__qualname__} (a {name})"
            return f"{what} is in ignore_errors (OMNII_OBS_SENTRY_IGNORE_ERRORS)"
        return None

    def span_processor(self) -> SpanProcessor | None:
        """sentry-sdk's OpenTelemetry span processor, for ``sentry.traces="sdk"`` only."""
        if self.config.sentry.traces != "sdk" or self.config.sentry_traces_sample_rate <= 0:
            return None
        from sentry_sdk.integrations.opentelemetry import SentrySpanProcessor

        return SentrySpanProcessor()

    def close(self) -> None:
        """Stop reporting; the last app to stop flushes and closes the shared client (may block)."""
        self.enabled = False
        _shared.leave(self, self.config.sentry.flush_timeout)


def _options_key(config: ObservabilityConfig) -> tuple[Any, ...]:
    s = config.sentry
    return (
        s.dsn,
        s.environment or config.environment,
        s.release or config.version,
        s.traces,
        config.sentry_traces_sample_rate if s.traces == "sdk" else None,
        s.ignore_errors,
        s.scrub_keys,
        s.send_default_pii,
        s.before_send,
        s.before_send_transaction,
    )


class _SharedClient:
    """sentry-sdk's one client per process, and the apps that report through it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owners: list[SentryReporter] = []
        self.key: tuple[Any, ...] | None = None

    def join(self, config: ObservabilityConfig, transport: Transport | None) -> SentryReporter:
        key = _options_key(config)
        with self.lock:
            client = sentry_sdk.get_client()
            if self.owners and client.is_active():
                first = self.owners[0]
                if key != self.key:
                    _logger.warning(
                        "another app in this process already started Sentry with different settings; "
                        "sentry-sdk has one client per process, so this app reports through that one "
                        "(environment %s, release %s)",
                        first.config.sentry.environment or first.config.environment,
                        first.config.sentry.release or first.config.version,
                    )
                reporter = SentryReporter(config, first.scrubber)
                self.owners.append(reporter)
                return reporter
            reporter = _init_client(config, transport)
            self.owners = [reporter]
            self.key = key
            return reporter

    def leave(self, reporter: SentryReporter, timeout: float) -> None:
        with self.lock:
            if reporter not in self.owners:
                return
            self.owners.remove(reporter)
            last = not self.owners
        client = sentry_sdk.get_client()
        if last:
            remove_external_propagation_context()
            transport = client.transport if isinstance(client.transport, QuietHttpTransport) else None
            if transport is not None:
                transport.health.last_chance()  # kept events get one more try, whatever the probe window
            client.close(timeout=timeout)
            if transport is not None:
                transport.finish()
                transport.health.report()
        else:
            client.flush(timeout=timeout)


_shared = _SharedClient()


def _hooks_of_earlier_init() -> tuple[SentryHook | None, SentryHook | None]:
    """``before_send`` / ``before_send_transaction`` the app gave ``sentry_sdk.init`` before the plugin started.

    ``sentry_sdk.init`` replaces the client, so the plugin's own init would drop them. A client an
    earlier app of ours started carries our hook: the one it had found is taken from it instead.
    """
    client = sentry_sdk.get_client()
    if not client.is_active():
        return None, None
    found: list[SentryHook | None] = []
    for index, name in enumerate(("before_send", "before_send_transaction")):
        hook = client.options.get(name)
        owner = getattr(hook, "__self__", None)
        found.append(owner.init_hooks[index] if isinstance(owner, SentryReporter) else hook)
    return found[0], found[1]


def _init_client(config: ObservabilityConfig, transport: Transport | None) -> SentryReporter:
    """Start sentry-sdk's client with the plugin's reporter, scrubber and transport; returns the reporter."""
    options = config.sentry
    scrubber = EventSecretScrubber(options.scrub_keys, options.send_default_pii)
    reporter = SentryReporter(config, scrubber, _hooks_of_earlier_init())
    _warn_replaced_init_hooks(config, reporter)
    sdk_traces = options.traces == "sdk" and config.tracing_active
    sentry_sdk.init(**_sdk_init_options(config, transport, scrubber, reporter, sdk_traces))
    transport_in_use = sentry_sdk.get_client().transport
    if isinstance(transport_in_use, QuietHttpTransport):
        transport_in_use.start_worker()  # here, not on the first error's response
    if not sdk_traces:
        register_external_propagation_context(_otel_propagation_context)
    # Litestar logs every unhandled exception, and we log server errors once; both are reported here.
    ignore_logger("litestar")
    ignore_logger(request_logger.name)
    ignore_logger(hook_logger.name)
    _logger.info("Sentry initialised for environment %s (%s)", config.environment, redact_url(options.dsn))
    return reporter


def _warn_replaced_init_hooks(config: ObservabilityConfig, reporter: SentryReporter) -> None:
    """One warning per hook given both to ``sentry_sdk.init`` and to :class:`SentryConfig`: the config's wins."""
    for index, name in enumerate(("before_send", "before_send_transaction")):
        earlier = reporter.init_hooks[index]
        if earlier is not None and getattr(config.sentry, name) not in (None, earlier):
            _logger.warning("SentryConfig.%s replaces the %s given to sentry_sdk.init", name, name)


def _sdk_init_options(
    config: ObservabilityConfig,
    transport: Transport | None,
    scrubber: EventSecretScrubber,
    reporter: SentryReporter,
    sdk_traces: bool,
) -> dict[str, Any]:
    """The keyword arguments of ``sentry_sdk.init``: the plugin's hooks and scrubber, the config's settings."""
    options = config.sentry
    extra: dict[str, Any] = {"send_default_pii": True} if options.send_default_pii else {}
    if sdk_traces:
        extra.update(instrumenter="otel", traces_sample_rate=config.sentry_traces_sample_rate)
    return {
        "dsn": options.dsn or "https://public@sentry.invalid/1",  # a capture's transport sends nowhere
        "environment": options.environment or config.environment,
        "release": options.release or config.version,
        "ignore_errors": _resolve_error_types(options.ignore_errors),
        "event_scrubber": scrubber,
        "before_send": reporter.before_send,
        "before_send_transaction": None
        if reporter.user_before_send_transaction is None
        else reporter.before_send_transaction,
        "transport": transport or QuietHttpTransport,
        # A capture's events stay in the process: no Spotlight sidecar, whatever SENTRY_SPOTLIGHT says.
        "spotlight": False if transport is not None else None,
        "auto_enabling_integrations": False,
        "shutdown_timeout": options.flush_timeout,
        # Room for bursts of errors (the default is 100); beyond it events are counted as lost.
        "transport_queue_size": 1000,
        **extra,
    }


def join_shared_client(config: ObservabilityConfig, transport: Transport | None) -> SentryReporter:
    """Start Sentry for this app, or share the client an app with the same settings started."""
    return _shared.join(config, transport)
