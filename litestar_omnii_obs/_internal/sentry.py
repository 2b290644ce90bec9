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

Everything that leaves the process goes through :class:`SecretScrubber`, built on
sentry-sdk's :class:`~sentry_sdk.scrubber.EventScrubber`: keys *containing* a
denylisted word are redacted, recursively, in request headers, cookies, body,
breadcrumbs, extra, user, frame variables and spans (by ``EventScrubber``), and in
tags, contexts, the query string and the URL (added here).
"""

from __future__ import annotations

import builtins
import importlib
import logging
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import sentry_sdk
from opentelemetry import trace
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.scope import register_external_propagation_context, remove_external_propagation_context

from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal._compat import QuietHttpTransport
from litestar_omnii_obs._internal.config import ObservabilityConfig, redact_url
from litestar_omnii_obs._internal.scrubbing import DEFAULT_SCRUB_KEYS, SecretScrubber

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from sentry_sdk.transport import Transport

    from litestar_omnii_obs._internal._compat import Event, Hint

__all__ = ["DEFAULT_SCRUB_KEYS", "SecretScrubber", "SentryReporter", "capture_error", "start_sentry"]

_logger = logging.getLogger("litestar_omnii_obs")
#: The logger for requests that failed; sentry-sdk ignores it, since the plugin reports those errors itself.
request_logger = logging.getLogger("litestar_omnii_obs.requests")

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


#: The current request's ``timed_operation`` breadcrumbs (a fresh list per request while Sentry is on).
_request_crumbs: ContextVar[list[dict[str, Any]] | None] = ContextVar("omnii_obs_breadcrumbs", default=None)


def new_request_breadcrumbs() -> None:
    """Give this request its own breadcrumb list (the middleware calls this while Sentry is on).

    Forking sentry-sdk's isolation scope per request would cost about 8 µs; a list costs
    nothing, and keeps one request's operations out of another's events.
    """
    _request_crumbs.set([])


def breadcrumb(name: str, duration: float, exc: BaseException | None) -> None:
    """``timed_operation`` observer: a breadcrumb on the request's list, else on sentry-sdk's scope."""
    crumb: dict[str, Any] = {
        "category": "timed_operation",
        "message": f"{name} {'failed' if exc else 'ok'} in {duration:.1f} ms",
        "level": "error" if exc else "info",
        "data": {"operation": name, "duration_ms": round(duration, 3), "outcome": "error" if exc else "ok"},
    }
    crumbs = _request_crumbs.get()
    if crumbs is not None:
        crumbs.append(crumb)
    else:
        sentry_sdk.add_breadcrumb(crumb)


def _add_request_breadcrumbs(scope: sentry_sdk.Scope) -> None:
    for crumb in _request_crumbs.get() or ():
        scope.add_breadcrumb(crumb)


class SentryReporter:
    """One app's view of Sentry: what it reports and how, on the process's shared client."""

    def __init__(self, config: ObservabilityConfig, scrubber: SecretScrubber) -> None:
        self.config = config
        self.scrubber = scrubber
        self.enabled = True

    def before_send(self, event: Event, hint: Hint) -> Event | None:
        """Last pass on the serialised event: anything a later processor added is scrubbed too."""
        scrubber = self.scrubber
        for section in ("extra", "contexts", "tags", "user"):
            scrubber.redact_plain(event.get(section))
        secrets = _request_secrets.get()
        if secrets:
            scrubber.redact_values(event, secrets)
        return event

    def capture(
        self,
        exc: BaseException,
        user_id: str | int | None = None,
        tags: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        if not self.enabled:
            return None
        with sentry_sdk.new_scope() as scope:
            _add_request_breadcrumbs(scope)
            if user_id is not None:
                scope.set_user({"id": str(user_id)})
            for key, value in (tags or {}).items():
                scope.set_tag(key, value)
            for key, value in (extra or {}).items():
                scope.set_extra(key, value)
            return sentry_sdk.capture_exception(exc)

    def capture_request_error(
        self,
        exc: BaseException,
        *,
        method: str,
        route: str,
        url: str,
        query_string: str,
        status: int,
        headers: Mapping[str, str],
        user_id: str | None,
        trace_id: str | None,
    ) -> str | None:
        """Report an exception that became a server error, with its request's context."""
        if not self.enabled:
            return None
        with sentry_sdk.new_scope() as scope:
            _add_request_breadcrumbs(scope)
            scope.set_transaction_name(f"{method} {route}")
            scope.set_tag("http.status_code", str(status))
            scope.set_tag("http.route", route)
            scope.set_context("response", {"status_code": status})
            if trace_id:
                scope.set_tag("trace_id", trace_id)
            if user_id is not None and self.config.sentry.send_default_pii:  # request-derived user data is PII
                scope.set_user({"id": user_id})
            request = {"method": method, "url": url, "query_string": query_string, "headers": dict(headers)}

            def add_request(event: Event, hint: Hint) -> Event:
                event["request"] = dict(request)
                return event

            scope.add_event_processor(add_request)
            token = _request_secrets.set(self.scrubber.secret_values(headers, query_string))
            try:
                return sentry_sdk.capture_exception(exc)
            finally:
                _request_secrets.reset(token)

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
            transport = client.transport
            client.close(timeout=timeout)
            if isinstance(transport, QuietHttpTransport):
                transport.finish()
                transport.health.report()
        else:
            client.flush(timeout=timeout)


_shared = _SharedClient()


def _init_client(config: ObservabilityConfig, transport: Transport | None) -> SentryReporter:
    options = config.sentry
    scrubber = SecretScrubber(options.scrub_keys, options.send_default_pii)
    reporter = SentryReporter(config, scrubber)
    sdk_traces = options.traces == "sdk" and config.tracing_active
    extra: dict[str, Any] = {"send_default_pii": True} if options.send_default_pii else {}
    if sdk_traces:
        extra.update(instrumenter="otel", traces_sample_rate=config.sentry_traces_sample_rate)
    sentry_sdk.init(
        dsn=options.dsn or "https://public@sentry.invalid/1",  # a capture's transport sends nowhere
        environment=options.environment or config.environment,
        release=options.release or config.version,
        ignore_errors=_resolve_error_types(options.ignore_errors),
        event_scrubber=scrubber,
        before_send=reporter.before_send,
        transport=transport or QuietHttpTransport,
        auto_enabling_integrations=False,
        shutdown_timeout=options.flush_timeout,
        # Room for bursts of errors (the default is 100); beyond it events are counted as lost.
        transport_queue_size=1000,
        **extra,
    )
    transport_in_use = sentry_sdk.get_client().transport
    if isinstance(transport_in_use, QuietHttpTransport):
        transport_in_use.start_worker()  # here, not on the first error's response
    if not sdk_traces:
        register_external_propagation_context(_otel_propagation_context)
    # Litestar logs every unhandled exception, and we log server errors once; both are reported here.
    ignore_logger("litestar")
    ignore_logger(request_logger.name)
    _logger.info("Sentry initialised for environment %s (%s)", config.environment, redact_url(options.dsn))
    return reporter


def start_sentry(config: ObservabilityConfig, transport: Transport | None = None) -> SentryReporter | None:
    """This app's Sentry reporter, or ``None`` (one warning naming ``SENTRY_DSN``) with no DSN.

    ``transport`` replaces the HTTP transport (the pytest plugin's in-memory one); with it,
    Sentry is on even without a DSN.
    """
    if not config.sentry.dsn and transport is None:
        _logger.warning("SENTRY_DSN is not set: errors are not reported to Sentry")
        return None
    return _shared.join(config, transport)


def capture_error(
    exc: BaseException,
    *,
    user_id: str | int | None = None,
    tags: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str | None:
    """Report ``exc`` to Sentry on an isolated scope; returns the event id (``None`` when off).

    Uses the Sentry settings of the app this code runs in. The user, tags and extra apply
    to this event only and never leak into another.
    """
    reporter = runtime.current().sentry
    if reporter is None:
        return None
    return reporter.capture(exc, user_id=user_id, tags=tags, extra=extra)
