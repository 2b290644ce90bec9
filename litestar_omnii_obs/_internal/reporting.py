"""What the request path and the package root need from Sentry reporting, without sentry-sdk.

An app without a DSN never imports sentry-sdk (issue 22: it costs every worker at start-up),
so the middleware, ``capture_error`` and the start-up check live here and load
:mod:`~litestar_omnii_obs._internal.sentry` only when Sentry starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from litestar_omnii_obs._internal import runtime

if TYPE_CHECKING:
    from litestar.types import Scope
    from sentry_sdk.transport import Transport

    from litestar_omnii_obs._internal.config import ObservabilityConfig
    from litestar_omnii_obs._internal.sentry import SentryReporter

__all__ = [
    "capture_error",
    "not_sent_note",
    "request_logger",
    "request_scope",
    "start_sentry",
]

_logger = logging.getLogger("litestar_omnii_obs")
#: The logger for requests that failed; sentry-sdk ignores it, since the plugin reports those errors itself.
request_logger = logging.getLogger("litestar_omnii_obs.requests")

#: The ASGI scope of the request this code runs in, while Sentry is on: ``capture_error`` reports with its context.
request_scope: ContextVar[Scope | None] = ContextVar("omnii_obs_request_scope", default=None)


def not_sent_note(
    app_runtime: runtime.Runtime | None, exc: BaseException, status: int | None, statuses: frozenset[int] | None = None
) -> str:
    """The ERROR line's `` (not sent to Sentry: why)`` for a server error Sentry does not get; ``""`` otherwise.

    Nothing when Sentry is off: the start-up warning said so once.
    """
    reporter = None if app_runtime is None else app_runtime.sentry
    reason = None if reporter is None else reporter.skip_reason(exc, status, statuses)
    return "" if reason is None else f" (not sent to Sentry: {reason})"


def start_sentry(config: ObservabilityConfig, transport: Transport | None = None) -> SentryReporter | None:
    """This app's Sentry reporter, or ``None`` (one warning naming ``SENTRY_DSN``) with no DSN.

    ``transport`` replaces the HTTP transport (the pytest plugin's in-memory one); with it,
    Sentry is on even without a DSN. sentry-sdk is imported here, on the first start with Sentry on.
    """
    if not config.sentry.dsn and transport is None:
        _logger.warning("SENTRY_DSN is not set: errors are not reported to Sentry")
        return None
    from litestar_omnii_obs._internal.sentry import join_shared_client

    return join_shared_client(config, transport)


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
