"""sentry-sdk's private names this package relies on, loaded only when Sentry starts (issue 22).

The rest of the dependencies' private names are in the package :mod:`~litestar_omnii_obs._internal._compat`;
these are apart so that an app without a DSN never imports sentry-sdk. Each has a test in
``tests/test_compat.py`` that fails loudly when sentry-sdk changes it.

* ``sentry_sdk._types.AnnotatedValue`` and ``SENSITIVE_DATA_SUBSTITUTE``: how sentry-sdk's
  own scrubber marks a redacted value, which ours must do the same way.
* sentry-sdk's ``HttpTransport`` hooks (``_get_pool_options``, ``_send_request``,
  ``_update_headers``, ``_request``, ``_update_rate_limits``, ``_worker``), under public
  names in :class:`SentryHttpTransport`: the app's transport
  (:class:`~litestar_omnii_obs._internal.sentry_transport.QuietHttpTransport`) and the
  ``litestar obs check`` one are built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sentry_sdk._types import SENSITIVE_DATA_SUBSTITUTE, AnnotatedValue
from sentry_sdk.transport import HttpTransport

if TYPE_CHECKING:
    import urllib3
    from sentry_sdk.envelope import Envelope

__all__ = ["SENSITIVE_DATA_SUBSTITUTE", "AnnotatedValue", "SentryHttpTransport"]


class SentryHttpTransport(HttpTransport):
    """sentry-sdk's HTTP transport with the private hooks this package uses under public names.

    Only names, no behaviour: :meth:`pool_options` and :meth:`send_body` are what a subclass
    overrides (sentry-sdk calls them through its ``_get_pool_options`` and ``_send_request``);
    :meth:`post`, :meth:`update_rate_limits`, :meth:`start_worker` and :meth:`submit` reach
    sentry-sdk's ``_update_headers`` + ``_request``, ``_update_rate_limits`` and ``_worker``.
    """

    def pool_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The urllib3 pool options to use, given sentry-sdk's (unchanged here)."""
        return options

    def _get_pool_options(self) -> dict[str, Any]:
        return self.pool_options(super()._get_pool_options())

    def send_body(self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Envelope | None) -> None:
        """Send one serialised envelope (sentry-sdk's worker thread calls this); here, as sentry-sdk does."""
        super()._send_request(body, headers, endpoint_type, envelope)

    def _send_request(
        self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Envelope | None = None
    ) -> None:
        self.send_body(body, headers, endpoint_type, envelope)

    def post(self, body: bytes, headers: dict[str, str], endpoint_type: Any) -> urllib3.BaseHTTPResponse:
        """One POST to Sentry with sentry-sdk's auth headers added to ``headers``; the caller closes the response."""
        self._update_headers(headers)
        return self._request("POST", endpoint_type, body, headers)

    def update_rate_limits(self, response: urllib3.BaseHTTPResponse) -> None:
        """Let sentry-sdk read the response's rate limits (its per-category windows for what follows)."""
        self._update_rate_limits(response)

    def start_worker(self) -> None:
        """Start sentry-sdk's sending thread now, not on the first event."""
        start = getattr(self._worker, "start", None)
        if callable(start):
            start()

    def submit(self, task: Callable[[], None]) -> bool:
        """Run ``task`` on sentry-sdk's sending thread; ``False`` if its queue is full."""
        return bool(self._worker.submit(task))
