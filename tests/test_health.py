"""The one outage rule (health.py): when a destination is tried, what is logged, what is counted.

Time is the ``clock`` the constructor takes, so windows are checked exactly, without sleeping.
"""

from __future__ import annotations

import logging
from collections import deque

import pytest

from litestar_omnii_obs._internal.health import (
    QUEUE_FULL,
    STILL_QUEUED,
    Attempt,
    PeerHealth,
    deliver_in_order,
    describe_failure,
    parse_retry_after,
    sentry_rate_limit,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_peer_that_is_up_is_always_tried(clock: Clock) -> None:
    health = PeerHealth("http://collector", clock=clock)
    assert all(health.begin() for _ in range(5))
    assert health.attempts == 5
    assert not health.failing


def test_a_peer_that_is_down_is_probed_once_per_window_and_resumes_at_once(
    clock: Clock, obs_log: list[logging.LogRecord]
) -> None:
    health = PeerHealth("http://collector", clock=clock)
    assert health.begin()
    health.failed("connection refused")
    for _ in range(10):  # however often the sender asks, nothing until the window ends
        assert not health.begin()
    clock.now += 2.0
    assert health.begin()  # the probe
    assert not health.begin()  # only one caller probes
    health.failed("connection refused")
    clock.now += 2.0
    assert health.begin()
    health.succeeded(3)
    assert health.begin()  # back: no waiting
    assert health.attempts == 4
    messages = [r.getMessage() for r in obs_log]
    assert sum("is failing (connection refused)" in m for m in messages) == 1  # once per outage
    assert sum("recovered after 4.0s" in m for m in messages) == 1


def test_a_long_outage_never_stretches_the_probe_window(clock: Clock) -> None:
    health = PeerHealth("http://collector", clock=clock)
    for _ in range(50):
        assert health.begin()
        health.failed("timed out")
        clock.now += 2.0  # down forever: still one probe every 2 s, never a growing back-off
    assert health.attempts == 50


def test_at_shutdown_a_down_peer_gets_one_last_attempt_but_a_rate_limit_holds(clock: Clock) -> None:
    down = PeerHealth("http://collector", clock=clock)
    assert down.begin()
    down.failed("connection refused")
    assert not down.begin()  # inside the probe window
    down.last_chance()
    assert down.begin()  # the last attempt, now
    assert not down.begin()  # one only: the rest waits for that attempt's outcome
    limited = PeerHealth("http://collector", clock=clock)
    limited.failed("HTTP 429", retry_after=30.0)
    limited.last_chance()
    assert not limited.begin()  # the server asked for a pause: it holds, even at shutdown
    up = PeerHealth("http://collector", clock=clock)
    up.last_chance()
    assert up.begin()
    assert down.attempts == 2
    assert limited.attempts == 0


def test_rate_limits_back_off_and_retry_after_is_obeyed(clock: Clock) -> None:
    health = PeerHealth("http://collector", clock=clock, max_backoff=8.0)
    health.failed("HTTP 429", limited=True)
    assert health.pause_remaining() == pytest.approx(2.0)
    clock.now += 2.0
    health.failed("HTTP 429", limited=True)
    assert health.pause_remaining() == pytest.approx(4.0)
    clock.now += 4.0
    health.failed("HTTP 429", limited=True)
    clock.now += 8.0
    health.failed("HTTP 429", limited=True)
    assert health.pause_remaining() == pytest.approx(8.0)  # capped
    clock.now += 8.0
    health.failed("HTTP 503", retry_after=30.0)
    assert health.pause_remaining() == pytest.approx(30.0)  # the server's window, exactly


def test_an_accepted_request_with_a_limit_pauses_what_follows(clock: Clock) -> None:
    health = PeerHealth("sentry", clock=clock)
    health.succeeded(4, pause=10.0)
    assert health.delivered_count == 4
    assert not health.begin()
    clock.now += 10.0
    assert health.begin()


def test_losses_are_counted_by_reason_and_summarised(clock: Clock, obs_log: list[logging.LogRecord]) -> None:
    health = PeerHealth("http://collector", clock=clock)
    health.succeeded(10)
    health.lose(3, QUEUE_FULL)
    health.lose(0, QUEUE_FULL)  # nothing: not counted, not a reason
    health.lose(2, STILL_QUEUED)
    health.refused(1, "too big")
    health.refused(1, "too big")
    assert health.dropped == 7
    assert health.lost() == {QUEUE_FULL: 3, STILL_QUEUED: 2, "refused by the server": 2}
    assert health.summary() == (
        "OTLP trace export to http://collector: 10 span(s) delivered, 7 lost "
        "(3 queue full, 2 refused by the server, 2 still queued at shutdown)"
    )
    assert sum("refused 1 span(s)" in r.getMessage() for r in obs_log) == 1  # refusals: logged once
    health.report()
    assert obs_log[-1].getMessage() == health.summary()
    assert obs_log[-1].levelno == logging.WARNING


def test_a_clean_run_reports_nothing(clock: Clock, obs_log: list[logging.LogRecord]) -> None:
    health = PeerHealth("http://collector", clock=clock)
    health.succeeded(5)
    health.report()
    assert obs_log == []


def test_the_probe_interval_must_make_sense() -> None:
    with pytest.raises(ValueError, match="probe_interval"):
        PeerHealth("x", probe_interval=0)
    with pytest.raises(ValueError, match="probe_interval"):
        PeerHealth("x", probe_interval=5, max_backoff=1)


def test_failures_are_described_without_urls() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert describe_failure(refused) == "connection refused"
    wrapped = RuntimeError("POST http://user:secret@host/ failed")
    wrapped.__cause__ = TimeoutError()
    assert describe_failure(wrapped) == "timed out"
    assert describe_failure(ValueError("http://user:secret@host")) == "ValueError"


def test_retry_after_and_sentry_rate_limits_parse() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412480.0 - 60) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert sentry_rate_limit("60:span;transaction:organization") == 60.0
    assert sentry_rate_limit("60:error:organization") is None
    assert sentry_rate_limit("30::organization, 90:span:project") == 90.0


# --------------------------------------------------------------------------- deliver_in_order


class ScriptedSender:
    """A sender whose peer answers from a script (one outcome per attempt), recording what it sent."""

    def __init__(self, health: PeerHealth, answers: list[Attempt], pause: float | None = None) -> None:
        self.health = health
        self.answers = answers
        self.pause = pause  # a rate limit the peer announces with each accepted item
        self.kept: deque[str] = deque()
        self.sent: list[str] = []
        self.tried: list[tuple[str, bool]] = []

    def oldest_kept(self) -> str | None:
        return self.kept[0] if self.kept else None

    def forget_kept(self, item: str) -> None:
        if self.kept and self.kept[0] is item:
            self.kept.popleft()

    def attempt(self, item: str, *, kept: bool) -> Attempt:
        self.tried.append((item, kept))
        outcome = self.answers.pop(0)
        if outcome is Attempt.DELIVERED:
            self.sent.append(item)
            self.health.succeeded(1, self.pause)
        elif outcome is Attempt.DOWN:
            self.health.failed("connection refused")
        elif outcome is Attempt.LOST:
            self.health.lose(1, "refused by the server")
        return outcome

    def keep(self, item: str) -> None:
        self.kept.append(item)


def test_an_up_peer_gets_each_item_at_once(clock: Clock) -> None:
    health = PeerHealth("http://peer", clock=clock)
    sender = ScriptedSender(health, [Attempt.DELIVERED, Attempt.DELIVERED])
    assert deliver_in_order(health, sender, "a")
    assert deliver_in_order(health, sender, "b")
    assert (sender.sent, list(sender.kept)) == (["a", "b"], [])


def test_a_down_peer_keeps_items_and_gets_them_oldest_first_when_back(clock: Clock) -> None:
    health = PeerHealth("http://peer", clock=clock)
    sender = ScriptedSender(health, [Attempt.DOWN, Attempt.DELIVERED, Attempt.DELIVERED, Attempt.DELIVERED])
    assert not deliver_in_order(health, sender, "a")  # the probe fails: kept
    assert not deliver_in_order(health, sender, "b")  # within the probe window: kept, not tried
    assert sender.tried == [("a", False)]
    clock.now += health.probe_interval
    assert deliver_in_order(health, sender, "c")
    assert sender.sent == ["a", "b", "c"]
    assert sender.tried[1:] == [("a", True), ("b", True), ("c", False)]
    assert not sender.kept


def test_a_kept_item_the_peer_refuses_is_dropped_and_the_rest_goes_on(clock: Clock) -> None:
    health = PeerHealth("http://peer", clock=clock)
    sender = ScriptedSender(health, [Attempt.LOST, Attempt.DELIVERED, Attempt.DELIVERED])
    sender.kept.extend(["a", "b"])
    assert deliver_in_order(health, sender, "c")
    assert (sender.sent, list(sender.kept)) == (["b", "c"], [])
    assert health.lost() == {"refused by the server": 1}


def test_a_probe_that_fails_again_keeps_the_new_item_behind_the_old_ones(clock: Clock) -> None:
    health = PeerHealth("http://peer", clock=clock)
    sender = ScriptedSender(health, [Attempt.DOWN])
    sender.kept.extend(["a"])
    assert not deliver_in_order(health, sender, "b")
    assert list(sender.kept) == ["a", "b"]


def test_a_rate_limit_on_an_accepted_item_holds_the_rest(clock: Clock) -> None:
    health = PeerHealth("http://peer", clock=clock)
    sender = ScriptedSender(health, [Attempt.DELIVERED], pause=5.0)
    sender.kept.extend(["a", "b"])
    assert not deliver_in_order(health, sender, "c")
    assert (sender.sent, list(sender.kept)) == (["a"], ["b", "c"])


def test_an_abandoned_sender_counts_the_new_item_once(clock: Clock) -> None:
    health = PeerHealth("http://peer", clock=clock)
    # ABANDONED on a kept item: the new item goes to keep(), whose job is to count it once the sender gave up.
    sender = ScriptedSender(health, [Attempt.ABANDONED])
    sender.kept.extend(["a"])
    assert not deliver_in_order(health, sender, "b")
    assert list(sender.kept) == ["a", "b"]
    # ABANDONED on the new item: it was on the wire, counted by the sender's abandon: not kept again.
    sender = ScriptedSender(health, [Attempt.ABANDONED])
    assert not deliver_in_order(health, sender, "c")
    assert not sender.kept
