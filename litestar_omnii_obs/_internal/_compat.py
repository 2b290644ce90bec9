"""Every private name of a dependency this package relies on, in one place.

Each item here has a test in ``tests/test_compat.py`` that fails loudly when the
dependency changes it, so an upgrade breaks a test rather than production.

* ``sentry_sdk._types.AnnotatedValue`` and ``SENSITIVE_DATA_SUBSTITUTE``: how sentry-sdk's
  own scrubber marks a redacted value, which ours must do the same way.
* sentry-sdk's ``HttpTransport`` hooks (``_get_pool_options``, ``_send_request``,
  ``_update_headers``, ``_request``, ``_update_rate_limits``, ``_worker``):
  :class:`QuietHttpTransport` sends under the package's one outage rule
  (:mod:`litestar_omnii_obs._internal.health`) and counts every event it does not deliver.
* The OpenTelemetry SDK's log messages for failed metric exports (matched as text by
  :class:`ExportLogFilter`, only to keep them quiet: one line per outage is ours; nothing
  is counted from them).
* ``TracerProvider._disabled`` / ``MeterProvider._disabled``: the SDK reads
  ``OTEL_SDK_DISABLED`` from ``os.environ`` in its constructors; the config is the
  whole truth, so :func:`follow_config_not_environ` sets it from the config.
* ``MetricExporter._preferred_temporality`` / ``_preferred_aggregation``: a wrapping
  exporter must declare the same preferences as the exporter it wraps.
* ``opentelemetry.context._RUNTIME_CONTEXT._current_context``: the context variable
  behind ``attach``/``detach``; the request hook sets and resets it directly (two
  function layers less on every request) when the runtime context is the default one.
* ``ReadableSpan._end_time`` / ``_status`` / ``_name``: the fields behind its ``end_time``,
  ``status`` and ``name`` properties. :class:`~litestar_omnii_obs._internal.server_span.ServerSpan`
  is its own ``ReadableSpan`` (as the SDK's ``Span`` is) and sets these as the span
  changes, instead of copying itself into a new ``ReadableSpan`` when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import urllib3
from opentelemetry import context as otel_context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from sentry_sdk._types import SENSITIVE_DATA_SUBSTITUTE, AnnotatedValue
from sentry_sdk.envelope import Envelope, Item
from sentry_sdk.transport import HttpTransport

from litestar_omnii_obs._internal.health import (
    OUTAGE_OVERFLOW,
    QUEUE_FULL,
    RATE_LIMITED,
    STILL_QUEUED,
    PeerHealth,
    describe_failure,
    parse_retry_after,
    sentry_rate_limit,
)

if TYPE_CHECKING:
    # sentry-sdk's event and hint types, from its private _types module.
    # The return type of ``Tracer.start_as_current_span``, which a delegating tracer must match.
    from opentelemetry.context import Context
    from opentelemetry.trace import Status
    from opentelemetry.util._decorator import _AgnosticContextManager as AgnosticContextManager
    from sentry_sdk._types import Event, Hint

__all__ = [
    "Event",
    "Hint",
    "AgnosticContextManager",
    "SENSITIVE_DATA_SUBSTITUTE",
    "AnnotatedValue",
    "ExportLogFilter",
    "QuietHttpTransport",
    "SDK_EXPORT_LOGGERS",
    "exporter_preferences",
    "follow_config_not_environ",
    "otel_context_var",
    "set_span_end",
    "set_span_name",
    "set_span_status",
]

_logger = logging.getLogger("litestar_omnii_obs")

#: Loggers whose per-batch messages are replaced by one message per outage.
SDK_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
_EXPORT_FAILURE_MESSAGES = ("Transient error", "Failed to export")


class ExportLogFilter(logging.Filter):
    """Swallows the SDK's per-batch export failure messages (our health logs one line per outage)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("export" in message and any(text in message for text in _EXPORT_FAILURE_MESSAGES))

    def install(self) -> None:
        for name in SDK_EXPORT_LOGGERS:
            logging.getLogger(name).addFilter(self)

    def remove(self) -> None:
        for name in SDK_EXPORT_LOGGERS:
            logging.getLogger(name).removeFilter(self)


def follow_config_not_environ(provider: TracerProvider | MeterProvider, disabled: bool) -> None:
    """Set the provider's disabled flag from the config, whatever ``OTEL_SDK_DISABLED`` says."""
    provider._disabled = disabled  # pyright: ignore[reportPrivateUsage]


def otel_context_var() -> ContextVar[Context] | None:
    """The context variable OpenTelemetry's ``attach``/``detach`` set and reset, if the runtime context is the default.

    ``None`` when ``OTEL_PYTHON_CONTEXT`` chose another implementation: then use the public API.
    """
    runtime_context = otel_context._RUNTIME_CONTEXT  # pyright: ignore[reportPrivateUsage]
    if type(runtime_context) is not ContextVarsRuntimeContext:
        return None
    variable = getattr(runtime_context, "_current_context", None)
    return variable if isinstance(variable, ContextVar) else None


def exporter_preferences(exporter: MetricExporter) -> dict[str, Any]:
    """The temporality and aggregation preferences ``exporter`` was built with."""
    return {
        "preferred_temporality": exporter._preferred_temporality,  # pyright: ignore[reportPrivateUsage]
        "preferred_aggregation": exporter._preferred_aggregation,  # pyright: ignore[reportPrivateUsage]
    }


class QuietHttpTransport(HttpTransport):
    """sentry-sdk's HTTP transport under the package's one outage rule (:class:`.health.PeerHealth`).

    urllib3 does not retry (``retries=False``) and every attempt is bounded (connect 2 s, read
    10 s). Connection refused, DNS failure and timeouts mean Sentry is down: envelopes are kept
    (up to :attr:`MAX_KEPT`) and Sentry is probed at most every 2 s, then what was kept is sent.
    429 and ``X-Sentry-Rate-Limits`` keep sentry-sdk's own per-category windows. Every error
    event handed to the transport is counted: delivered, or lost by reason
    (:meth:`finish` counts what is still queued when the client closes).
    """

    #: Envelopes kept while Sentry is down (the oldest go first, counted).
    MAX_KEPT = 100

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        dsn = self.parsed_dsn
        target = f"{dsn.scheme}://{dsn.host}:{dsn.port}" if dsn else "?"
        self.health = PeerHealth(target, kind="Sentry event sending", unit="event")
        self._kept: deque[tuple[bytes, dict[str, str], Any, int]] = deque()
        self._lock = threading.Lock()
        self._submitted = 0
        self._probe: threading.Timer | None = None

    def _get_pool_options(self) -> dict[str, Any]:
        options: dict[str, Any] = super()._get_pool_options()
        options["retries"] = False
        options["timeout"] = urllib3.Timeout(connect=2.0, read=10.0)
        return options

    def start_worker(self) -> None:
        """Start the sending thread now (the lifespan calls this, so no request ever starts it)."""
        start = getattr(self._worker, "start", None)
        if callable(start):
            start()

    def capture_envelope(self, envelope: Envelope) -> None:
        with self._lock:
            self._submitted += _events_in(envelope)
        super().capture_envelope(envelope)

    def record_lost_event(
        self,
        reason: str,
        data_category: Any = None,
        item: Item | None = None,
        *,
        quantity: int = 1,
    ) -> None:
        category = item.data_category if item is not None else data_category
        if category == "error" and reason in _SENTRY_LOSSES:
            self.health.lose(1 if item is not None else quantity, _SENTRY_LOSSES[reason])
        super().record_lost_event(reason, data_category, item, quantity=quantity)

    def _send_request(self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Any = None) -> None:
        self._deliver(body, headers, endpoint_type, _events_in(envelope))

    def _deliver(self, body: bytes, headers: dict[str, str], endpoint_type: Any, events: int) -> None:
        """Send what was kept, oldest first, then this; keep this if Sentry is down (worker thread only)."""
        if self.health.begin():
            while self._kept:  # the first attempt of an outage is the probe
                if self._attempt(*self._kept[0]) is None:
                    break
                self._kept.popleft()
                if not self.health.begin():
                    break
            else:
                if self._attempt(body, headers, endpoint_type, events) is not None:
                    return
        self._keep(body, headers, endpoint_type, events)

    def _attempt(self, body: bytes, headers: dict[str, str], endpoint_type: Any, events: int) -> bool | None:
        """One POST: ``True`` delivered, ``False`` lost for good (counted), ``None`` Sentry is down (keep it)."""
        self._update_headers(headers)
        try:
            response = self._request("POST", endpoint_type, body, headers)
        except Exception as exc:
            self.health.failed(describe_failure(exc))
            return None
        try:
            self._update_rate_limits(response)  # sentry-sdk's per-category windows for what follows
            status = int(response.status)
            if 200 <= status < 300:
                self.health.succeeded(events)
                return True
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429:  # Sentry dropped it (and counted it on its side)
                self.health.lose(events, RATE_LIMITED)
                limit = sentry_rate_limit(response.headers.get("X-Sentry-Rate-Limits"), frozenset({"error"}))
                self.health.failed("HTTP 429", retry_after=limit or retry_after, limited=True)
                return False
            if status >= 500 or status == 408:
                self.health.failed(f"HTTP {status}", retry_after=retry_after, limited=status == 503)
                return None
            self.health.refused(events, f"HTTP {status}")
            return False
        finally:
            response.close()

    def _keep(self, body: bytes, headers: dict[str, str], endpoint_type: Any, events: int) -> None:
        self._kept.append((body, headers, endpoint_type, events))
        while len(self._kept) > self.MAX_KEPT:
            self.health.lose(self._kept.popleft()[3], OUTAGE_OVERFLOW)
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        """Try again when the probe window ends, even if no new event comes to trigger it."""
        with self._lock:
            if self._probe is not None and self._probe.is_alive():
                return
            self._probe = threading.Timer(self.health.pause_remaining() + 0.01, self._submit_retry)
            self._probe.daemon = True
            self._probe.start()

    def _submit_retry(self) -> None:
        if self._kept:
            self._worker.submit(self._retry_kept)

    def flush(self, timeout: float, callback: Any = None) -> None:
        if self._kept and timeout > 0:
            self._worker.submit(self._retry_kept)
        super().flush(timeout, callback)

    def _retry_kept(self) -> None:
        if self._kept:
            self._deliver(*self._kept.pop())

    def finish(self) -> None:
        """After the client closed: count every event neither delivered nor already counted as lost."""
        with self._lock:
            submitted = self._submitted
            if self._probe is not None:
                self._probe.cancel()
        accounted = self.health.delivered_count + self.health.dropped
        self._kept.clear()
        self.health.lose(submitted - accounted, STILL_QUEUED)


def _events_in(envelope: Any) -> int:
    """Error events in ``envelope`` (the items counted as delivered or lost)."""
    if envelope is None:
        return 0
    return sum(1 for item in envelope.items if item.data_category == "error")


#: sentry-sdk's loss reasons for an event it had accepted, as the shutdown summary words them.
_SENTRY_LOSSES = {
    "queue_overflow": QUEUE_FULL,
    "ratelimit_backoff": RATE_LIMITED,
    "network_error": "network error",
    "send_error": "send error",
}


def set_span_end(span: ReadableSpan, end_time: int) -> None:
    """What ``span.end_time`` returns from now on."""
    span._end_time = end_time


def set_span_status(span: ReadableSpan, status: Status) -> None:
    """What ``span.status`` returns from now on."""
    span._status = status


def set_span_name(span: ReadableSpan, name: str) -> None:
    """What ``span.name`` returns from now on."""
    span._name = name
