"""How error events reach Sentry: sentry-sdk's HTTP transport under the package's one outage rule.

The transport keeps sentry-sdk's queue, worker thread, envelope format and per-category rate
limits, and replaces what happens when Sentry does not answer: the same rule as every other
destination (:mod:`litestar_omnii_obs._internal.health`), the same in-order sending loop
(:func:`~litestar_omnii_obs._internal.health.deliver_in_order`), and a count of every error
event it did not deliver, by reason, for the shutdown report.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import urllib3
from sentry_sdk.envelope import Envelope, Item

from litestar_omnii_obs._internal._compat.sentry import SentryHttpTransport
from litestar_omnii_obs._internal.health import (
    OUTAGE_OVERFLOW,
    QUEUE_FULL,
    RATE_LIMITED,
    STILL_QUEUED,
    Attempt,
    PeerHealth,
    deliver_in_order,
    describe_failure,
    parse_retry_after,
    sentry_rate_limit,
)

__all__ = ["QuietHttpTransport"]

#: One envelope to send: its body, headers, endpoint type, and the error events it holds.
_Envelope = tuple[bytes, dict[str, str], Any, int]

#: sentry-sdk's loss reasons for an event it had accepted, as the shutdown summary words them.
_SENTRY_LOSSES = {
    "queue_overflow": QUEUE_FULL,
    "ratelimit_backoff": RATE_LIMITED,
    "network_error": "network error",
    "send_error": "send error",
}


def _events_in(envelope: Envelope | None) -> int:
    """Error events in ``envelope`` (the items counted as delivered or lost)."""
    if envelope is None:
        return 0
    return sum(1 for item in envelope.items if item.data_category == "error")


class QuietHttpTransport(SentryHttpTransport):
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
        self._kept: deque[_Envelope] = deque()
        self._lock = threading.Lock()
        self._submitted = 0
        self._probe: threading.Timer | None = None
        self._killed = False  # the client closed: no probe, and no retry that would restart sentry-sdk's worker

    def pool_options(self, options: dict[str, Any]) -> dict[str, Any]:
        options["retries"] = False
        options["timeout"] = urllib3.Timeout(connect=2.0, read=10.0)
        return options

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

    def send_body(self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Envelope | None) -> None:
        """Send what was kept, oldest first, then this; keep this if Sentry is down (worker thread only)."""
        deliver_in_order(self.health, self, (body, headers, endpoint_type, _events_in(envelope)))

    # The four methods deliver_in_order drives (only sentry-sdk's worker thread calls them).

    def oldest_kept(self) -> _Envelope | None:
        return self._kept[0] if self._kept else None

    def forget_kept(self, item: _Envelope) -> None:
        if self._kept and self._kept[0] is item:
            self._kept.popleft()

    def attempt(self, item: _Envelope, *, kept: bool) -> Attempt:
        """One POST, its outcome recorded on :attr:`health` (an event Sentry refuses is counted as lost)."""
        body, headers, endpoint_type, events = item
        try:
            response = self.post(body, headers, endpoint_type)
        except Exception as exc:
            self.health.failed(describe_failure(exc))
            return Attempt.DOWN
        try:
            self.update_rate_limits(response)  # sentry-sdk's per-category windows for what follows
            return self._outcome(int(response.status), response.headers, events)
        finally:
            response.close()

    def _outcome(self, status: int, headers: Any, events: int) -> Attempt:
        if 200 <= status < 300:
            self.health.succeeded(events)
            return Attempt.DELIVERED
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:  # Sentry dropped it (and counted it on its side)
            self.health.lose(events, RATE_LIMITED)
            limit = sentry_rate_limit(headers.get("X-Sentry-Rate-Limits"), frozenset({"error"}))
            self.health.failed("HTTP 429", retry_after=limit or retry_after, limited=True)
            return Attempt.LOST
        if status >= 500 or status == 408:
            self.health.failed(f"HTTP {status}", retry_after=retry_after, limited=status == 503)
            return Attempt.DOWN
        self.health.refused(events, f"HTTP {status}")
        return Attempt.LOST

    def keep(self, item: _Envelope) -> None:
        self._kept.append(item)
        while len(self._kept) > self.MAX_KEPT:
            self.health.lose(self._kept.popleft()[3], OUTAGE_OVERFLOW)
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        """Try again when the probe window ends, even if no new event comes to trigger it."""
        with self._lock:
            if self._killed or (self._probe is not None and self._probe.is_alive()):
                return
            self._probe = threading.Timer(self.health.pause_remaining() + 0.01, self._submit_retry)
            self._probe.daemon = True
            self._probe.start()

    def _submit_retry(self) -> None:
        if self._kept and not self._killed:  # sentry-sdk's submit() restarts a killed worker
            self.submit(self._retry_kept)

    def kill(self) -> None:
        """The client closed (after its flush): stop probing; what is still kept is counted by :meth:`finish`."""
        with self._lock:
            self._killed = True
            if self._probe is not None:
                self._probe.cancel()
        super().kill()

    def flush(self, timeout: float, callback: Any = None) -> None:
        if self._kept and timeout > 0:
            self.submit(self._retry_kept)
        super().flush(timeout, callback)

    def _retry_kept(self) -> None:
        if self._kept:
            deliver_in_order(self.health, self, self._kept.pop())

    def finish(self) -> None:
        """After the client closed: count every event neither delivered nor already counted as lost."""
        with self._lock:
            submitted = self._submitted
            if self._probe is not None:
                self._probe.cancel()
        accounted = self.health.delivered_count + self.health.dropped
        self._kept.clear()
        self.health.lose(submitted - accounted, STILL_QUEUED)
