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
* ``TracerProvider._disabled`` / ``MeterProvider._disabled``: the SDK reads
  ``OTEL_SDK_DISABLED`` from ``os.environ`` in its constructors; the config is the
  whole truth, so :func:`follow_config_not_environ` sets it from the config.
* ``ReadableSpan._end_time`` / ``_status`` / ``_name``: the fields behind its ``end_time``,
  ``status`` and ``name`` properties. :class:`~litestar_omnii_obs._internal.server_span.ServerSpan`
  is its own ``ReadableSpan`` (as the SDK's ``Span`` is) and sets these as the span
  changes, instead of copying itself into a new ``ReadableSpan`` when it ends.
* ``NonRecordingSpan``'s other methods never read its ``_context``:
  :class:`~litestar_omnii_obs._internal.sampling.DroppedSpan` skips its ``__init__`` and builds
  its context on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # For annotations only: the SDK's metrics package loads only when metrics are exported (issue 22).
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    # The return type of ``Tracer.start_as_current_span``, which a delegating tracer must match.
    from opentelemetry.trace import Status
    from opentelemetry.util._decorator import _AgnosticContextManager as AgnosticContextManager

    # sentry-sdk's event and hint types, from its private _types module.
    from sentry_sdk._types import Event, Hint

__all__ = [
    "AgnosticContextManager",
    "Event",
    "Hint",
    "follow_config_not_environ",
    "sentry_litestar_hooks",
    "set_span_end",
    "set_span_name",
    "set_span_status",
]


def follow_config_not_environ(provider: TracerProvider | MeterProvider, disabled: bool) -> None:
    """Set the provider's disabled flag from the config, whatever ``OTEL_SDK_DISABLED`` says."""
    provider._disabled = disabled  # pyright: ignore[reportPrivateUsage]


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
