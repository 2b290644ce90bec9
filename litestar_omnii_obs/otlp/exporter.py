"""One span exporter for every OTLP target: encode a batch once, send each target its spans."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from litestar_omnii_obs.otlp.encoding import EncodedBatch

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from litestar_omnii_obs.otlp.targets import Target

__all__ = ["FanOutSpanExporter"]


class FanOutSpanExporter(SpanExporter):
    """Sends each batch to every target (a collector, Sentry), encoding each span once.

    Why one exporter rather than one per target: a second ``BatchSpanProcessor`` would queue,
    wake and encode every span again. Here a batch is encoded once (:class:`EncodedBatch`);
    a target taking every span gets the whole request's bytes, Sentry the same span bytes
    under its rate; a target backing off is skipped without building its request.

    The export result is the first target's (the collector's): a failing Sentry must not make
    the collector look failed. Runs in the span processor's worker thread; never raises;
    each send is bounded by its target's timeout.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = tuple(targets)
        self._shutdown = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        if not spans or not self.targets:
            return SpanExportResult.SUCCESS
        try:
            batch = EncodedBatch(spans)
        except Exception:  # a span the encoder cannot write: lose the batch, not the worker
            for target in self.targets:
                target.health.drop(len(spans))
            return SpanExportResult.FAILURE
        results = [self._send(target, batch) for target in self.targets]
        return SpanExportResult.SUCCESS if results[0] else SpanExportResult.FAILURE

    @staticmethod
    def _send(target: Target, batch: EncodedBatch) -> bool:
        keep = target.choose(batch.trace_ids)
        count = len(batch) if keep is None else sum(keep)
        if count == 0:
            return True  # nothing of this batch is for this target
        if not target.health.ready():
            target.health.drop(count)
            return False
        return target.transport.send(batch.request(keep), count)

    def dropped(self) -> dict[str, int]:
        """Spans each target did not get (by target, credentials redacted), for the shutdown report."""
        counts: dict[str, int] = {}
        for target in self.targets:
            counts[target.name] = counts.get(target.name, 0) + target.health.dropped
        return counts

    def shutdown(self) -> None:
        """Stop exporting and close every connection (does not wait on any endpoint)."""
        self._shutdown.set()
        for target in self.targets:
            target.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export is sent (or dropped) before it returns."""
        return True
