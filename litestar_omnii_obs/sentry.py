"""Errors to Sentry: init from the lifespan, one event per server error, secrets scrubbed.

sentry-sdk is initialised in the plugin's lifespan, after ``Litestar(...)`` was built,
so its auto-enabled ``LitestarIntegration`` could not patch this app anyway; the
plugin captures through Litestar's own hooks instead and turns framework
auto-instrumentation off (``auto_enabling_integrations=False``). Performance data
comes from the plugin's OpenTelemetry spans through sentry-sdk's
``SentrySpanProcessor`` (``instrumenter="otel"``), so each request is traced once.

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
import time
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import sentry_sdk
import urllib3
from sentry_sdk._types import SENSITIVE_DATA_SUBSTITUTE, AnnotatedValue
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.scrubber import EventScrubber
from sentry_sdk.transport import HttpTransport
from sentry_sdk.utils import iter_event_frames

from litestar_omnii_obs import metrics
from litestar_omnii_obs.config import ObservabilityConfig, redact_url

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from sentry_sdk._types import Event, Hint

__all__ = ["DEFAULT_SCRUB_KEYS", "SecretScrubber", "capture_error", "flush_sentry", "init_sentry", "sentry_enabled"]

_logger = logging.getLogger("litestar_omnii_obs")

#: Words that mark a key as secret wherever they appear in it (case-insensitive, ``-`` = ``_``).
DEFAULT_SCRUB_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "auth_",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "private_key",
    "credential",
    "dsn",
)

REDACTED: str = SENSITIVE_DATA_SUBSTITUTE

_state: dict[str, Any] = {"enabled": False}
#: Secret values of the request being reported, blanked anywhere in its event (set during capture).
_request_secrets: ContextVar[frozenset[str]] = ContextVar("omnii_obs_request_secrets", default=frozenset())


class SecretScrubber(EventScrubber):
    """An :class:`EventScrubber` that matches keys *containing* a denylisted word."""

    def __init__(self, extra_keys: tuple[str, ...] = (), send_default_pii: bool = False) -> None:
        super().__init__(denylist=[], recursive=True, send_default_pii=send_default_pii)
        self.words = tuple(dict.fromkeys(k.lower().replace("-", "_") for k in DEFAULT_SCRUB_KEYS + extra_keys))
        self.exact = frozenset(self.denylist)  # sentry-sdk's PII list when PII is off

    def is_secret(self, key: str) -> bool:
        normalized = key.lower().replace("-", "_")
        return normalized in self.exact or any(word in normalized for word in self.words)

    def scrub_dict(self, d: object) -> None:
        if not isinstance(d, dict):
            return
        for key, value in d.items():
            if isinstance(key, str) and self.is_secret(key):
                d[key] = AnnotatedValue.substituted_because_contains_sensitive_data()
            else:
                self.scrub_dict(value)
                self.scrub_list(value)

    def scrub_list(self, lst: object) -> None:
        if not isinstance(lst, list | tuple):
            return
        for value in cast("list[Any]", lst):
            self.scrub_dict(value)
            self.scrub_list(value)

    def redact_plain(self, value: object) -> None:
        """Like :meth:`scrub_dict` for already-serialised data: values become ``[Filtered]``."""
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and self.is_secret(key):
                    value[key] = REDACTED
                else:
                    self.redact_plain(item)
        elif isinstance(value, list):
            for item in value:
                self.redact_plain(item)

    def scrub_query(self, query: str) -> str:
        pairs = parse_qsl(query, keep_blank_values=True)
        return urlencode([(k, REDACTED if self.is_secret(k) else v) for k, v in pairs])

    def scrub_frames(self, event: Event) -> None:
        """Library frames lose their locals: Litestar's hold whole requests (headers, body) as reprs."""
        for frame in iter_event_frames(event):
            if frame.get("in_app") is False:
                frame.pop("vars", None)
            elif "vars" in frame:
                self.scrub_dict(frame["vars"])

    def secret_values(self, headers: Mapping[str, str], query: str) -> frozenset[str]:
        """Values of secret headers, cookies and query parameters, to blank wherever they appear."""
        values: set[str] = set()
        for name, value in headers.items():
            if name.lower() == "cookie":
                for part in value.split(";"):
                    values.add(part.partition("=")[2].strip())
            if self.is_secret(name):
                values.add(value)
                values.update(value.split())  # "Bearer <token>"
        values.update(v for k, v in parse_qsl(query, keep_blank_values=True) if self.is_secret(k))
        return frozenset(v for v in values if len(v) >= 6)

    def redact_values(self, value: object, secrets: frozenset[str]) -> object:
        """Replace every occurrence of ``secrets`` inside the strings of ``value`` (serialised data)."""
        if isinstance(value, str):
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = self.redact_values(item, secrets)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = self.redact_values(item, secrets)
        return value

    def scrub_event(self, event: Event) -> None:
        super().scrub_event(event)
        for section in ("tags", "contexts"):
            self.scrub_dict(event.get(section))
        request = event.get("request")
        if isinstance(request, dict):
            query = request.get("query_string")
            if isinstance(query, str) and query:
                request["query_string"] = self.scrub_query(query)
            url = request.get("url")
            if isinstance(url, str) and "?" in url:
                parts = urlsplit(url)
                request["url"] = parts._replace(query=self.scrub_query(parts.query)).geturl()


class QuietHttpTransport(HttpTransport):
    """sentry-sdk's HTTP transport, without retry storms or per-envelope error logs.

    urllib3 does not retry (``retries=False``); a failed send is logged once and
    pauses sending for a growing back-off (1 s up to 60 s), dropping envelopes in the
    meantime instead of queueing connection attempts; the first success logs recovery.
    """

    _failing = False
    _backoff = 1.0

    def _get_pool_options(self) -> dict[str, Any]:
        options: dict[str, Any] = super()._get_pool_options()
        options["retries"] = False
        options["timeout"] = urllib3.Timeout(connect=2.0, read=self.TIMEOUT)
        return options

    def _send_request(self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Any = None) -> None:
        try:
            super()._send_request(body, headers, endpoint_type, envelope)
        except urllib3.exceptions.TimeoutError as exc:
            self._fail(f"{type(exc).__name__}: {exc}", back_off=False)  # slow, not down: keep sending
        except Exception as exc:
            self._fail(f"{type(exc).__name__}: {exc}")

    def _handle_response(self, response: Any, envelope: Any) -> None:
        status = int(response.status)
        if 200 <= status < 300 or status == 429:
            super()._handle_response(response=response, envelope=envelope)
            if status == 429:
                self._fail("HTTP 429 (rate limited)")
            else:
                self._recover()
            return
        self._update_rate_limits(response)
        self._handle_request_error(envelope=envelope, loss_reason=f"status_{status}")
        self._fail(f"HTTP {status}")

    def _fail(self, reason: str, back_off: bool = True) -> None:
        if not self._failing:
            self._failing = True
            dsn = self.parsed_dsn
            target = f"{dsn.scheme}://{dsn.host}:{dsn.port}" if dsn else "?"
            _logger.warning(
                "sending to Sentry at %s failed (%s); events are dropped while it fails (logged once)", target, reason
            )
        elif back_off:
            self._backoff = min(self._backoff * 2, 60.0)
        if not back_off:
            return
        until = datetime.now(UTC).timestamp() + self._backoff
        self._disabled_until[None] = datetime.fromtimestamp(until, UTC)

    def _recover(self) -> None:
        if self._failing:
            self._failing = False
            self._backoff = 1.0
            _logger.warning("sending to Sentry recovered")


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


def _before_send(event: Event, hint: Hint) -> Event | None:
    """Last pass on the serialised event: anything a later processor added is scrubbed too."""
    scrubber = _state.get("scrubber")
    if isinstance(scrubber, SecretScrubber):
        for section in ("extra", "contexts", "tags", "user"):
            scrubber.redact_plain(event.get(section))
        secrets = _request_secrets.get()
        if secrets:
            scrubber.redact_values(event, secrets)
    return event


def _breadcrumb(name: str, duration: float, exc: BaseException | None) -> None:
    sentry_sdk.add_breadcrumb(
        category="timed_operation",
        message=f"{name} {'failed' if exc else 'ok'} in {duration:.1f} ms",
        level="error" if exc else "info",
        data={"operation": name, "duration_ms": round(duration, 3), "outcome": "error" if exc else "ok"},
    )


def init_sentry(config: ObservabilityConfig, use_otel: bool = False) -> bool:
    """Initialise sentry-sdk from ``config``; returns whether Sentry is on.

    With no DSN this logs one warning naming ``SENTRY_DSN`` and leaves Sentry off, so
    :func:`capture_error` is a no-op.
    """
    options = config.sentry
    if not options.dsn:
        _logger.warning("SENTRY_DSN is not set: errors are not reported to Sentry")
        _state["enabled"] = False
        return False
    scrubber = SecretScrubber(options.scrub_keys, options.send_default_pii)
    pii: dict[str, Any] = {"send_default_pii": True} if options.send_default_pii else {}
    sentry_sdk.init(
        dsn=options.dsn,
        environment=options.environment or config.environment,
        release=options.release or config.version,
        traces_sample_rate=config.sentry_traces_sample_rate if use_otel else None,
        instrumenter="otel" if use_otel else "sentry",
        ignore_errors=_resolve_error_types(options.ignore_errors),
        event_scrubber=scrubber,
        before_send=_before_send,
        transport=QuietHttpTransport,
        auto_enabling_integrations=False,
        shutdown_timeout=options.flush_timeout,
        # Room for bursts of errors (the default is 100); beyond it events are counted as lost.
        transport_queue_size=1000,
        **pii,
    )
    # Litestar logs every unhandled exception; we report those ourselves, once.
    ignore_logger("litestar")
    if _state["enabled"]:  # initialised again in this process: keep one breadcrumb writer
        _state["remove_breadcrumbs"]()
    _state.update(enabled=True, scrubber=scrubber, remove_breadcrumbs=metrics.add_observers(on_operation=_breadcrumb))
    _logger.info("Sentry initialised for environment %s (%s)", config.environment, redact_url(options.dsn))
    return True


def sentry_enabled() -> bool:
    """Whether :func:`init_sentry` turned Sentry on in this process."""
    return bool(_state["enabled"])


def sentry_span_processor(config: ObservabilityConfig) -> SpanProcessor | None:
    """sentry-sdk's OpenTelemetry span processor, when Sentry wants performance data."""
    if not config.sentry.dsn or config.sentry_traces_sample_rate <= 0:
        return None
    from sentry_sdk.integrations.opentelemetry import SentrySpanProcessor

    return SentrySpanProcessor()


def capture_error(
    exc: BaseException,
    *,
    user_id: str | int | None = None,
    tags: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str | None:
    """Report ``exc`` to Sentry on an isolated scope; returns the event id (``None`` when off).

    The user, tags and extra apply to this event only and never leak into another.
    """
    if not _state["enabled"]:
        return None
    with sentry_sdk.new_scope() as scope:
        if user_id is not None:
            scope.set_user({"id": str(user_id)})
        for key, value in (tags or {}).items():
            scope.set_tag(key, value)
        for key, value in (extra or {}).items():
            scope.set_extra(key, value)
        return sentry_sdk.capture_exception(exc)


def capture_request_error(
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
    if not _state["enabled"]:
        return None
    with sentry_sdk.new_scope() as scope:
        scope.set_transaction_name(f"{method} {route}")
        scope.set_tag("http.status_code", str(status))
        scope.set_tag("http.route", route)
        scope.set_context("response", {"status_code": status})
        if trace_id:
            scope.set_tag("trace_id", trace_id)
            scope.set_context("otel", {"trace_id": trace_id})
        if user_id is not None:
            scope.set_user({"id": user_id})
        request = {"method": method, "url": url, "query_string": query_string, "headers": dict(headers)}

        def add_request(event: Event, hint: Hint) -> Event:
            event["request"] = dict(request)
            return event

        scope.add_event_processor(add_request)
        scrubber = _state.get("scrubber")
        secrets = scrubber.secret_values(headers, query_string) if isinstance(scrubber, SecretScrubber) else None
        token = _request_secrets.set(secrets or frozenset())
        try:
            return sentry_sdk.capture_exception(exc)
        finally:
            _request_secrets.reset(token)


def flush_sentry(timeout: float) -> None:
    """Deliver queued events within ``timeout`` seconds; the plugin's Sentry is then off."""
    if _state["enabled"]:
        started = time.monotonic()
        sentry_sdk.flush(timeout=timeout)
        if time.monotonic() - started >= timeout:
            _logger.warning("Sentry flush reached its %.1fs bound; events still queued were dropped", timeout)
        _state["enabled"] = False
        _state["remove_breadcrumbs"]()
