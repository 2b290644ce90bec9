"""Every private name of a dependency this package relies on, in one place.

Each item here has a test in ``tests/test_compat.py`` that fails loudly when the
dependency changes it, so an upgrade breaks a test rather than production.

* ``sentry_sdk._types.AnnotatedValue`` and ``SENSITIVE_DATA_SUBSTITUTE``: how sentry-sdk's
  own scrubber marks a redacted value, which ours must do the same way.
* sentry-sdk's ``HttpTransport`` hooks (``_get_pool_options``, ``_send_request``,
  ``_handle_response``, ``_update_rate_limits``, ``_handle_request_error``,
  ``_disabled_until``): :class:`QuietHttpTransport` replaces retry storms and
  per-envelope error logs with one log line per outage and a back-off.
* The OpenTelemetry SDK's log messages for a full span queue and for failed metric
  exports (matched as text by :class:`ExportLogFilter`): the SDK reports these only
  through logging.
* ``TracerProvider._disabled`` / ``MeterProvider._disabled``: the SDK reads
  ``OTEL_SDK_DISABLED`` from ``os.environ`` in its constructors; the config is the
  whole truth, so :func:`follow_config_not_environ` sets it from the config.
* ``MetricExporter._preferred_temporality`` / ``_preferred_aggregation``: a wrapping
  exporter must declare the same preferences as the exporter it wraps.
* ``opentelemetry.context._RUNTIME_CONTEXT._current_context``: the context variable
  behind ``attach``/``detach``; the request hook sets and resets it directly (two
  function layers less on every request) when the runtime context is the default one.
* ``ReadableSpan._end_time`` / ``_status`` / ``_name``: the fields behind its ``end_time``,
  ``status`` and ``name`` properties. :class:`~litestar_omnii_obs.server_span.ServerSpan`
  is its own ``ReadableSpan`` (as the SDK's ``Span`` is) and sets these as the span
  changes, instead of copying itself into a new ``ReadableSpan`` when it ends.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import urllib3
from opentelemetry import context as otel_context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from sentry_sdk._types import SENSITIVE_DATA_SUBSTITUTE, AnnotatedValue
from sentry_sdk.transport import HttpTransport

if TYPE_CHECKING:
    # The return type of ``Tracer.start_as_current_span``, which a delegating tracer must match.
    from opentelemetry.context import Context
    from opentelemetry.trace import Status
    from opentelemetry.util._decorator import _AgnosticContextManager as AgnosticContextManager

__all__ = [
    "DROPPED_SPANS_MESSAGE",
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
#: How the SDK's batch processor starts the message it logs for each dropped span.
DROPPED_SPANS_MESSAGE = "Queue full"
_EXPORT_FAILURE_MESSAGES = ("Transient error", "Failed to export")


class ExportLogFilter(logging.Filter):
    """Swallows the SDK's per-batch export and queue-full messages; counts dropped spans."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.drop_reported = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(DROPPED_SPANS_MESSAGE):
            self.dropped += 1
            if not self.drop_reported:
                self.drop_reported = True
                _logger.warning("span queue full: spans are being dropped (counted; reported again at shutdown)")
            return False
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


def set_span_end(span: ReadableSpan, end_time: int) -> None:
    """What ``span.end_time`` returns from now on."""
    span._end_time = end_time


def set_span_status(span: ReadableSpan, status: Status) -> None:
    """What ``span.status`` returns from now on."""
    span._status = status


def set_span_name(span: ReadableSpan, name: str) -> None:
    """What ``span.name`` returns from now on."""
    span._name = name
