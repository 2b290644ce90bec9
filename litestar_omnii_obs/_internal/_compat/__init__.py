"""Every private name of a dependency this package relies on, as named accessors (sentry-sdk's: ``_compat.sentry``).

Each item here has a test in ``tests/test_compat.py`` that fails loudly when the
dependency changes it, so an upgrade breaks a test rather than production. Nothing here
decides anything: the modules that use these names hold the behaviour.

* sentry-sdk's ``AnnotatedValue``, ``SENSITIVE_DATA_SUBSTITUTE`` and ``HttpTransport`` hooks
  live in :mod:`~litestar_omnii_obs._internal._compat.sentry`, imported only when Sentry starts
  (issue 22: no sentry-sdk without a DSN); nothing here imports sentry-sdk at module level.
* ``sentry_sdk.integrations.litestar``'s ``exception_handler`` and
  ``SentryLitestarASGIMiddleware``: what its LitestarIntegration injects into an app, which the
  plugin removes (:func:`sentry_litestar_hooks`).
* The OpenTelemetry SDK's log messages for failed metric exports (matched as text by
  :class:`ExportLogFilter`, to keep them quiet: one line per outage is ours; nothing is
  counted from them, and :func:`take_export_failure` reads the reason they give).
* ``TracerProvider._disabled`` / ``MeterProvider._disabled``: the SDK reads
  ``OTEL_SDK_DISABLED`` from ``os.environ`` in its constructors; the config is the
  whole truth, so :func:`follow_config_not_environ` sets it from the config.
* ``MetricExporter._preferred_temporality`` / ``_preferred_aggregation``: a wrapping
  exporter must declare the same preferences as the exporter it wraps.
* ``ReadableSpan._end_time`` / ``_status`` / ``_name``: the fields behind its ``end_time``,
  ``status`` and ``name`` properties. :class:`~litestar_omnii_obs._internal.server_span.ServerSpan`
  is its own ``ReadableSpan`` (as the SDK's ``Span`` is) and sets these as the span
  changes, instead of copying itself into a new ``ReadableSpan`` when it ends.
* ``NonRecordingSpan``'s other methods never read its ``_context``:
  :class:`~litestar_omnii_obs._internal.sampling.DroppedSpan` skips its ``__init__`` and builds
  its context on demand.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # For annotations only: the SDK's metrics package loads only when metrics are exported (issue 22).
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    # The return type of ``Tracer.start_as_current_span``, which a delegating tracer must match.
    from opentelemetry.trace import Status
    from opentelemetry.util._decorator import _AgnosticContextManager as AgnosticContextManager

    # sentry-sdk's event and hint types, from its private _types module.
    from sentry_sdk._types import Event, Hint

__all__ = [
    "SDK_EXPORT_LOGGERS",
    "AgnosticContextManager",
    "Event",
    "ExportLogFilter",
    "Hint",
    "exporter_preferences",
    "follow_config_not_environ",
    "sentry_litestar_hooks",
    "set_span_end",
    "set_span_name",
    "set_span_status",
]

#: Loggers whose per-batch messages are replaced by one message per outage.
SDK_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
_EXPORT_FAILURE_MESSAGES = ("Transient error", "Failed to export")


_LAST_FAILURE = threading.local()  # the thread's last swallowed message (the export ran in that thread)
_GRPC_CODE = re.compile(r"error code: (?:StatusCode\.)?(\w+)")
_HTTP_CODE = re.compile(r"\bcode: (\d{3})\b")


class ExportLogFilter(logging.Filter):
    """Swallows the SDK's per-batch export failure messages (our health logs one line per outage).

    The reason they give (a gRPC status, an HTTP status) is kept for :func:`take_export_failure`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "export" in message and any(text in message for text in _EXPORT_FAILURE_MESSAGES):
            _LAST_FAILURE.reason = message
            return False
        return True

    def install(self) -> None:
        # First in line: the SDK's own DuplicateFilter drops a message it saw in the last 20 s (another
        # app's, another endpoint's) before later filters run, and its reason would be lost.
        for name in SDK_EXPORT_LOGGERS:
            filters = logging.getLogger(name).filters
            if self not in filters:
                filters.insert(0, self)

    def remove(self) -> None:
        for name in SDK_EXPORT_LOGGERS:
            logging.getLogger(name).removeFilter(self)


def take_export_failure() -> str | None:
    """Why the SDK exporter's last export in this thread failed, from the message the filter swallowed
    (``UNIMPLEMENTED``, ``HTTP 405``); ``None`` if it logged none."""
    message: str | None = getattr(_LAST_FAILURE, "reason", None)
    _LAST_FAILURE.reason = None
    if message is None:
        return None
    found = _GRPC_CODE.search(message)
    if found:
        return found.group(1)
    found = _HTTP_CODE.search(message)
    return f"HTTP {found.group(1)}" if found else message[:160]


def follow_config_not_environ(provider: TracerProvider | MeterProvider, disabled: bool) -> None:
    """Set the provider's disabled flag from the config, whatever ``OTEL_SDK_DISABLED`` says."""
    provider._disabled = disabled  # pyright: ignore[reportPrivateUsage]


def exporter_preferences(exporter: MetricExporter) -> dict[str, Any]:
    """The temporality and aggregation preferences ``exporter`` was built with."""
    return {
        "preferred_temporality": exporter._preferred_temporality,  # pyright: ignore[reportPrivateUsage]
        "preferred_aggregation": exporter._preferred_aggregation,  # pyright: ignore[reportPrivateUsage]
    }


def sentry_litestar_hooks() -> tuple[object, object] | None:
    """The ``after_exception`` hook and the middleware sentry-sdk's LitestarIntegration adds to an app.

    ``None`` if the integration cannot be imported.
    """
    try:
        from sentry_sdk.integrations import litestar as sentry_litestar
    except Exception:  # pragma: no cover - the integration needs litestar, which we have
        return None
    return sentry_litestar.exception_handler, sentry_litestar.SentryLitestarASGIMiddleware


def set_span_end(span: ReadableSpan, end_time: int) -> None:
    """What ``span.end_time`` returns from now on."""
    span._end_time = end_time


def set_span_status(span: ReadableSpan, status: Status) -> None:
    """What ``span.status`` returns from now on."""
    span._status = status


def set_span_name(span: ReadableSpan, name: str) -> None:
    """What ``span.name`` returns from now on."""
    span._name = name
