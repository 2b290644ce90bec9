"""One span exporter for every OTLP target: encode a batch once, send each target its spans."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from litestar_omnii_obs._internal.health import ENCODING, STILL_QUEUED
from litestar_omnii_obs._internal.otlp.encoding import EncodedBatch, EncodedSpan, SpanGroups

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from litestar_omnii_obs._internal.otlp.targets import Target

__all__ = ["FanOutSpanExporter"]


class FanOutSpanExporter(SpanExporter):
    """Sends each batch to every target (a collector, Sentry), encoding each span once.

    Why one exporter rather than one per target: a second span processor would queue,
    wake and encode every span again. Here each span is encoded once, when it ends
    (:meth:`encode`), and a batch is assembled from the bytes (:class:`EncodedBatch`); a target
    taking every span gets the whole request's bytes, Sentry the same span bytes under its rate.
    A target that is down keeps its requests and is probed (see
    :class:`~litestar_omnii_obs._internal.health.PeerHealth`) without holding up the others.

    The export result is the first target's (the collector's): a failing Sentry must not make
    the collector look failed. Runs in the span processor's worker thread; never raises;
    each attempt is bounded by its target's timeout. Every span a target does not get is
    counted by that target's health, by reason.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = tuple(targets)
        self._shutdown = threading.Event()
        #: Held while spans change hands (the batcher's queue -> a claimed batch -> a transport).
        self.lock = threading.Lock()
        #: The batch being exported: spans each target has not been handed yet (for :meth:`abandon`).
        self._unsent: dict[int, int] = {}
        self._groups = SpanGroups()

    def encode(self, span: ReadableSpan) -> EncodedSpan:
        """``span``'s bytes for a later batch (raises if the span cannot be encoded)."""
        return self._groups.encode(span)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            encoded = [self.encode(span) for span in spans]
        except Exception:  # a span the encoder cannot write: lose the batch
            self.lose([span.context.trace_id for span in spans if span.context is not None], ENCODING)
            return SpanExportResult.FAILURE
        with self.lock:
            claim = self.claim(encoded)
        return self.send_claimed(encoded, claim)

    def claim(self, spans: Sequence[EncodedSpan]) -> list[list[bool] | None]:
        """Note which spans of ``spans`` each target is owed, so :meth:`abandon` can count them.

        The caller holds :attr:`lock` (the batcher takes spans off its queue and claims them in one step).
        """
        trace_ids = [trace_id for trace_id, _, _ in spans]
        choices = [target.choose(trace_ids) for target in self.targets]
        self._unsent = {
            index: count
            for index, keep in enumerate(choices)
            if (count := len(trace_ids) if keep is None else sum(keep))
        }
        return choices

    def send_claimed(self, spans: Sequence[EncodedSpan], choices: list[list[bool] | None]) -> SpanExportResult:
        """Send each target its share of ``spans`` (claimed by :meth:`claim`)."""
        if self._shutdown.is_set():
            self._lose_unsent(STILL_QUEUED)
            return SpanExportResult.FAILURE
        if not spans or not self.targets:
            return SpanExportResult.SUCCESS
        batch = EncodedBatch(spans, self._groups)
        results = []
        for index, target in enumerate(self.targets):
            with self.lock:
                count = self._unsent.pop(index, None)
            if count is None:  # nothing of this batch is for this target (or abandoned meanwhile)
                results.append(True)
                continue
            results.append(target.transport.send(batch.request(choices[index]), count))
        return SpanExportResult.SUCCESS if results[0] else SpanExportResult.FAILURE

    def _lose_unsent(self, reason: str) -> None:
        with self.lock:
            unsent, self._unsent = self._unsent, {}
        for index, count in unsent.items():
            self.targets[index].health.lose(count, reason)

    def lose(self, trace_ids: Sequence[int], reason: str) -> None:
        """Count the spans of ``trace_ids`` as lost for ``reason`` by each target that would have taken them."""
        for target in self.targets:
            keep = target.choose(trace_ids)
            target.health.lose(len(trace_ids) if keep is None else sum(keep), reason)

    def kept(self) -> int:
        """Spans targets keep for peers that are down."""
        return sum(target.transport.kept for target in self.targets)

    def next_probe(self) -> float:
        """Seconds until a target keeping spans may be tried again (a little more, never 0)."""
        waits = [target.health.pause_remaining() for target in self.targets if target.transport.kept]
        return min(waits, default=0.0) + 0.01

    def retry_kept(self) -> None:
        """Send what targets kept during an outage if they may be tried now (before shutdown gives up)."""
        for target in self.targets:
            target.transport.retry_kept()

    def last_chance(self) -> None:
        """Shutdown: each target that is down gets one more attempt now (see :meth:`PeerHealth.last_chance`)."""
        for target in self.targets:
            target.health.last_chance()

    def abandon(self) -> None:
        """Shutdown's bound is reached: what is kept, on the wire or not yet handed over counts as lost."""
        self._lose_unsent(STILL_QUEUED)
        for target in self.targets:
            target.transport.abandon()

    def dropped(self) -> dict[str, int]:
        """Spans each target did not get (by target, credentials redacted)."""
        counts: dict[str, int] = {}
        for target in self.targets:
            counts[target.name] = counts.get(target.name, 0) + target.health.dropped
        return counts

    def report(self) -> None:
        """Log one line per target: spans delivered and lost, by reason (the shutdown report)."""
        for target in self.targets:
            target.health.report()

    def shutdown(self) -> None:
        """Stop exporting and close every connection (does not wait on any endpoint)."""
        self._shutdown.set()
        for target in self.targets:
            target.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here beyond what targets keep for a peer that is down."""
        self.retry_kept()
        return True
