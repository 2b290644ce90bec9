"""The one rule for a destination that fails: when to try again, what to log, what was lost.

Every destination data leaves the process for (the collector's traces and metrics, Sentry's
OTLP endpoint, Sentry's event ingest) has one :class:`PeerHealth`, and follows the same rule:

* **Down** (connection refused, DNS failure, connect or read timeout, a 5xx other than 503,
  gRPC ``UNAVAILABLE``): what is to be sent is kept (bounded, by the caller) and the peer is
  probed with a real send at most every ``probe_interval`` seconds (2 s), so sending resumes
  within 2 s of the peer's return, however long the outage was.
* **Rate-limited** (429, 503, gRPC ``RESOURCE_EXHAUSTED``, ``Retry-After``,
  ``X-Sentry-Rate-Limits``): no send until the server's window ends; without a window the
  pause doubles from ``probe_interval`` up to ``max_backoff`` while the server keeps limiting.
* **At shutdown** a down peer gets one last attempt whatever its probe window
  (:meth:`PeerHealth.last_chance`), bounded by the shutdown's own timeout; a rate limit holds.
* One WARNING when an outage starts, one when it ends; nothing per request or per batch.
* Every item not delivered is counted here, by reason (:meth:`lose`), so shutdown can report
  exactly what each destination lost (:meth:`summary`). No count comes from another library's
  log text.

Thread-safe: the sender (a worker thread) and the shutdown report read it concurrently.
:func:`deliver_in_order` is the one sending loop on top of it: what was kept goes first,
oldest first, so a peer that comes back gets everything in the order it was made.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Protocol, TypeVar

import urllib3

__all__ = [
    "PROBE_INTERVAL",
    "SENTRY_SPAN_CATEGORIES",
    "Attempt",
    "KeepingSender",
    "PeerHealth",
    "deliver_in_order",
    "describe_failure",
    "parse_retry_after",
    "sentry_rate_limit",
]

_logger = logging.getLogger("litestar_omnii_obs")

#: Seconds between two probes of a peer that is down: the longest a recovered peer waits for us.
PROBE_INTERVAL = 2.0

#: ``X-Sentry-Rate-Limits`` categories that stop our spans. sentry-sdk knows no OTLP-specific
#: category: spans are ``span`` (``Item.data_category``), traces were ``transaction``; an empty
#: category list means every category.
SENTRY_SPAN_CATEGORIES = frozenset({"span", "transaction"})

#: Loss reasons, as the shutdown summary words them.
QUEUE_FULL = "queue full"
OUTAGE_OVERFLOW = "outage outlasted the queue"
REFUSED = "refused by the server"
STILL_QUEUED = "still queued at shutdown"
ENCODING = "could not be encoded"
RATE_LIMITED = "rate limited"


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


def describe_failure(exc: BaseException) -> str:
    """A short reason for a failed send, free of URLs (the innermost OS error, else the type)."""
    seen: set[int] = set()
    timed_out = False
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()  # "connection refused", "name or service not known"
        # urllib3's NewConnectionError subclasses its ConnectTimeoutError without being a timeout.
        if isinstance(current, TimeoutError | urllib3.exceptions.TimeoutError) and not isinstance(
            current, urllib3.exceptions.NewConnectionError
        ):
            timed_out = True
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)
    return "timed out" if timed_out else type(exc).__name__


class PeerHealth:
    """Outage state and loss counts of one destination (see the module docstring for the rule).

    ``begin()`` says whether a send may be attempted now (while down, yes to one probe per
    ``probe_interval``); ``succeeded()`` and ``failed()`` record how an attempt went;
    ``lose()`` counts items not delivered; ``delivered()`` counts items a peer accepted.
    """

    def __init__(
        self,
        target: str,
        *,
        kind: str = "OTLP trace export",
        unit: str = "span",
        probe_interval: float = PROBE_INTERVAL,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        off_hint: str = "",
    ) -> None:
        if probe_interval <= 0 or max_backoff < probe_interval:
            raise ValueError("need 0 < probe_interval <= max_backoff")
        self.target = target
        self.kind = kind
        self.unit = unit
        #: How to stop sending to this peer, for the outage warning (e.g. ``OTEL_METRICS_EXPORTER=none``):
        #: a backend that takes no such data answers every send with a failure.
        self.off_hint = off_hint
        self.probe_interval = probe_interval
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._limited = 0  # consecutive rate-limited answers without a window of the server's
        self._server_pause = False  # the current pause is the server's (a rate limit), not a probe window
        self._next_try = 0.0
        self._since = 0.0
        self._lost: dict[str, int] = {}
        self._lost_in_outage = 0
        self._delivered = 0
        self._refusal_logged = False
        #: Sends attempted (probes included): how often the peer was actually contacted.
        self.attempts = 0
        #: Why the last failed attempt failed ("connection refused", "HTTP 503") or the server refused
        #: items ("HTTP 403", its partial-success message); "" before any.
        self.last_reason = ""

    # ------------------------------------------------------------------ state

    @property
    def failing(self) -> bool:
        """Whether an outage (failure or rate limit) is in progress."""
        with self._lock:
            return self._failing

    @property
    def dropped(self) -> int:
        """Items not delivered to this destination since it was created, whatever the reason."""
        with self._lock:
            return sum(self._lost.values())

    def lost(self) -> dict[str, int]:
        """Items not delivered, by reason."""
        with self._lock:
            return dict(self._lost)

    @property
    def delivered_count(self) -> int:
        with self._lock:
            return self._delivered

    def ready(self) -> bool:
        """Whether a send may be attempted now (a query: see :meth:`begin` for the sender's call)."""
        with self._lock:
            return self._clock() >= self._next_try

    def begin(self) -> bool:
        """The sender's call before an attempt: ``True`` if it may send now.

        While down, ``True`` once per probe window: that caller probes, any other waits for the
        probe's outcome or the next window.
        """
        with self._lock:
            now = self._clock()
            if now < self._next_try:
                return False
            if self._failing:
                self._next_try = now + self.probe_interval
            self.attempts += 1
            return True

    def last_chance(self) -> None:
        """The process is stopping: let one more attempt through now, whatever the probe window.

        Why: a peer that came back less than a probe window before shutdown would otherwise lose
        everything kept for it. A pause the server asked for (a rate limit) is kept.
        """
        with self._lock:
            if self._failing and not self._server_pause:
                self._next_try = 0.0

    def pause_remaining(self) -> float:
        """Seconds until the next send may be attempted (0 when one may be now)."""
        with self._lock:
            return max(0.0, self._next_try - self._clock())

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, items: int = 0, pause: float | None = None) -> None:
        """A send of ``items`` was accepted; ``pause``: the server still asks for no more for that long."""
        with self._lock:
            self._delivered += max(0, items)
            was_failing, lost, since = self._failing, self._lost_in_outage, self._since
            if pause is None or pause <= 0:
                self._failing = False
                self._limited = 0
                self._server_pause = False
                self._next_try = 0.0
                self._lost_in_outage = 0
        if pause is not None and pause > 0:
            self._pause(f"rate-limited for {pause:g}s", pause, limited=True)
        elif was_failing:
            _logger.warning(
                "%s to %s recovered after %.1fs (%d %s(s) lost while it failed)",
                self.kind,
                self.target,
                self._clock() - since,
                lost,
                self.unit,
            )

    def failed(self, reason: str, *, retry_after: float | None = None, limited: bool = False) -> None:
        """A send failed: down (probe again in ``probe_interval``) or ``limited`` (back off, or ``retry_after``)."""
        if retry_after is not None:
            self._pause(f"{reason}, retry after {retry_after:g}s", retry_after, limited=True)
            return
        if limited:
            with self._lock:
                self._limited += 1
                delay = min(self.max_backoff, self.probe_interval * 2 ** min(self._limited - 1, 32))
            self._pause(reason, delay, limited=True)
            return
        self._pause(reason, self.probe_interval, limited=False)

    def lose(self, items: int, reason: str) -> None:
        """Count ``items`` as not delivered, for ``reason`` (one of this module's reason strings)."""
        if items > 0:
            with self._lock:
                self._lost[reason] = self._lost.get(reason, 0) + items
                if self._failing:
                    self._lost_in_outage += items

    def refused(self, items: int, message: str) -> None:
        """An accepted request in which the server refused ``items`` (OTLP partial success); logged once."""
        self.lose(items, REFUSED)
        with self._lock:
            self.last_reason = message or REFUSED
            first = not self._refusal_logged
            self._refusal_logged = True
        if first:
            _logger.warning(
                "%s to %s: the server refused %d %s(s) of an accepted request (%s); "
                "further refusals are counted, not logged",
                self.kind,
                self.target,
                items,
                self.unit,
                message or "no reason given",
            )

    def _pause(self, reason: str, delay: float, *, limited: bool) -> None:
        with self._lock:
            self.last_reason = reason
            now = self._clock()
            self._next_try = max(self._next_try, now + max(0.0, delay)) if limited else now + max(0.0, delay)
            self._server_pause = limited
            first = not self._failing
            if first:
                self._failing = True
                self._since = now
        if first:
            _logger.warning(
                "%s to %s is failing (%s); %ss are kept (bounded) and it is tried again every %gs "
                "or when the server allows (logged once per outage)%s",
                self.kind,
                self.target,
                reason,
                self.unit,
                self.probe_interval,
                f". If the endpoint does not take them, set {self.off_hint}" if self.off_hint else "",
            )

    # ------------------------------------------------------------------ report

    def summary(self) -> str:
        """One line for the shutdown report: what was delivered and what was lost, by reason."""
        with self._lock:
            lost = dict(self._lost)
            delivered = self._delivered
        total = sum(lost.values())
        text = f"{self.kind} to {self.target}: {delivered} {self.unit}(s) delivered, {total} lost"
        if total:
            text += " (" + ", ".join(f"{count} {reason}" for reason, count in sorted(lost.items())) + ")"
        return text

    def report(self) -> None:
        """Log :meth:`summary` as a WARNING when something was lost (a clean shutdown stays quiet)."""
        if self.dropped:
            _logger.warning("%s", self.summary())


# --------------------------------------------------------------------------- sending in order


class Attempt(Enum):
    """How one send went, as :func:`deliver_in_order` needs to know it."""

    DELIVERED = "delivered"  #: the peer took it
    LOST = "lost"  #: the peer answered and will never take it (counted by the attempt)
    DOWN = "down"  #: the peer is down or limiting: the item waits with the kept ones
    ABANDONED = "abandoned"  #: the sender gave up while it ran (what was on the wire is counted)


Item = TypeVar("Item")


class KeepingSender(Protocol[Item]):
    """A sender that keeps items for a peer that is down: what :func:`deliver_in_order` drives."""

    def oldest_kept(self) -> Item | None:
        """The item kept longest, still kept while it is tried; ``None`` when nothing is kept."""
        ...

    def forget_kept(self, item: Item) -> None:
        """``item`` (the oldest kept) was delivered or lost: stop keeping it (if still kept)."""
        ...

    def attempt(self, item: Item, *, kept: bool) -> Attempt:
        """One send of ``item`` with its outcome recorded on the sender's health; ``kept``: it is the oldest kept."""
        ...

    def keep(self, item: Item) -> None:
        """Keep ``item`` for later (bounded, the overflow counted), or count it as lost if the sender gave up."""
        ...


def deliver_in_order(health: PeerHealth, sender: KeepingSender[Item], item: Item) -> bool:
    """Send what ``sender`` kept, oldest first, then ``item``; ``True`` if ``item`` was delivered.

    Why one loop: every destination keeps order and follows :class:`PeerHealth`'s rule the same
    way. The first attempt of an outage is the probe: while the peer is down (or a rate limit
    starts on an accepted request) ``item`` joins the kept ones. An item is counted exactly
    once: kept, delivered, or lost by the attempt, by :meth:`KeepingSender.keep`, or by the
    sender's own abandon (for what was on the wire).
    """
    if not health.begin():
        sender.keep(item)
        return False
    while (oldest := sender.oldest_kept()) is not None:
        outcome = sender.attempt(oldest, kept=True)
        if outcome is Attempt.DOWN or outcome is Attempt.ABANDONED:
            sender.keep(item)  # abandoned: item was neither kept nor on the wire, so keep() counts it
            return False
        sender.forget_kept(oldest)
        if not health.begin():  # a rate limit on an accepted request: the rest waits
            sender.keep(item)
            return False
    outcome = sender.attempt(item, kept=False)
    if outcome is Attempt.DOWN:
        sender.keep(item)
    return outcome is Attempt.DELIVERED
