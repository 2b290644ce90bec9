"""What every OTLP transport does when its endpoint fails: log once, back off, drop, count.

A dead, slow, rate-limiting or failing endpoint must not become the application's problem:
spans are sent from the ``BatchSpanProcessor``'s worker thread, and while an endpoint is
failing the worker must neither wait on it for every batch nor queue batches for later (the
queue would only grow until it drops anyway, and a burst on recovery would hit the endpoint
when it is weakest). So one :class:`EndpointHealth` per endpoint:

* logs one WARNING on the ``litestar_omnii_obs`` logger when sending starts failing and one
  when it works again, naming the endpoint with its credentials redacted;
* after a failure, refuses to send for a growing, capped delay (1 s, 2 s, 4 s ... 60 s by
  default), or for exactly as long as the server asked (``Retry-After``, Sentry's
  ``X-Sentry-Rate-Limits``);
* counts every span it could not deliver, so shutdown can say how many were lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["SENTRY_SPAN_CATEGORIES", "EndpointHealth", "parse_retry_after", "sentry_rate_limit"]

_logger = logging.getLogger("litestar_omnii_obs")

#: ``X-Sentry-Rate-Limits`` categories that stop our spans. sentry-sdk knows no OTLP-specific
#: category: spans are ``span`` (``Item.data_category``), traces were ``transaction``; an empty
#: category list means every category.
SENTRY_SPAN_CATEGORIES = frozenset({"span", "transaction"})


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date); ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def sentry_rate_limit(value: str | None, categories: frozenset[str] = SENTRY_SPAN_CATEGORIES) -> float | None:
    """Seconds an ``X-Sentry-Rate-Limits`` value stops ``categories`` for; ``None`` if no limit applies.

    The value is ``retry_after:categories:scope[:reason_code[:namespaces]]`` limits, comma
    separated, categories ``;``-separated, an empty list meaning all (as sentry-sdk parses it).
    """
    if not value:
        return None
    longest: float | None = None
    for limit in value.split(","):
        fields = limit.strip().split(":")
        if len(fields) < 2:
            continue
        try:
            seconds = float(fields[0])
        except ValueError:
            continue
        if seconds != seconds:  # NaN
            continue
        named = {c.strip() for c in fields[1].split(";")} - {""}
        if not named or named & categories:
            longest = max(longest or 0.0, seconds)
    return longest


class EndpointHealth:
    """Outage state of one endpoint, shared by its transport and the exporter that feeds it.

    Thread-safe. ``ready()`` says whether a send may be attempted now; ``succeeded()`` and
    ``failed()`` record how an attempt went; ``drop()`` counts spans not delivered.
    """

    def __init__(
        self,
        target: str,
        *,
        kind: str = "trace",
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        self.target = target
        self.kind = kind
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0  # consecutive failed attempts
        self._failing = False
        self._resume_at = 0.0
        self._dropped = 0
        self._dropped_in_outage = 0
        self._refusal_logged = False

    @property
    def dropped(self) -> int:
        """Spans not delivered to this endpoint since it was created."""
        with self._lock:
            return self._dropped

    @property
    def failing(self) -> bool:
        """Whether an outage (failure or rate limit) is in progress."""
        with self._lock:
            return self._failing

    def ready(self) -> bool:
        """Whether a send may be attempted now (not backing off, not rate-limited)."""
        with self._lock:
            return self._clock() >= self._resume_at

    def pause_remaining(self) -> float:
        """Seconds until :meth:`ready` holds again (0 when it holds)."""
        with self._lock:
            return max(0.0, self._resume_at - self._clock())

    def drop(self, spans: int) -> None:
        """Count ``spans`` as not delivered (skipped while backing off, or their send failed)."""
        if spans > 0:
            with self._lock:
                self._dropped += spans
                self._dropped_in_outage += spans

    def succeeded(self, pause: float | None = None) -> None:
        """A send was accepted; ``pause``: the server still asks for no more for that many seconds."""
        if pause is not None and pause > 0:
            self._pause(f"rate-limited for {pause:g}s", pause, spans=0)
            return
        with self._lock:
            was_failing, dropped = self._failing, self._dropped_in_outage
            self._failures = 0
            self._failing = False
            self._resume_at = 0.0
            self._dropped_in_outage = 0
        if was_failing:
            _logger.warning(
                "OTLP %s export to %s recovered (%d span(s) dropped while it was failing)",
                self.kind,
                self.target,
                dropped,
            )

    def refused(self, spans: int, message: str) -> None:
        """An accepted request in which the server refused ``spans`` spans (OTLP partial success).

        Counted as dropped; logged once per endpoint (a collector that refuses some spans
        usually refuses the same kind every time).
        """
        with self._lock:
            self._dropped += max(0, spans)
            first = not self._refusal_logged
            self._refusal_logged = True
        if first:
            _logger.warning(
                "OTLP %s export to %s: the server refused %d span(s) of an accepted request (%s); "
                "further refusals are counted, not logged",
                self.kind,
                self.target,
                spans,
                message or "no reason given",
            )

    def failed(self, reason: str, spans: int = 0, retry_after: float | None = None) -> None:
        """A send failed (``spans`` lost): back off, or wait ``retry_after`` seconds if the server said so."""
        with self._lock:
            self._failures += 1
            delay = min(self.max_backoff, self.initial_backoff * 2 ** min(self._failures - 1, 32))
        if retry_after is not None:
            delay = retry_after
            reason = f"{reason}, retry after {retry_after:g}s"
        self._pause(reason, delay, spans)

    def _pause(self, reason: str, delay: float, spans: int) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, self._clock() + max(0.0, delay))
            self._dropped += spans
            self._dropped_in_outage += spans
            first = not self._failing
            self._failing = True
        if first:
            _logger.warning(
                "OTLP %s export to %s is failing (%s); spans are dropped, not queued, until it recovers (logged once)",
                self.kind,
                self.target,
                reason,
            )
