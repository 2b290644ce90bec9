"""A pytest plugin for users' own tests: assert on the records, spans and Sentry events an app made.

Registered through the ``pytest11`` entry point, so installing the package is enough::

    async def test_graph_query_is_timed(obs_capture: ObservabilityCapture) -> None:
        async with AsyncTestClient(app=create_app()) as client:
            await client.post("/graph/query", json={"query": "MATCH (n) RETURN n"})
        (record,) = obs_capture.records(GraphQueryMetric)
        assert record.result_count == 3

While the fixture is active, every app whose lifespan starts gets in-memory sinks
besides its configured ones: metric records as typed records, finished spans through
OpenTelemetry's own ``InMemorySpanExporter``, and Sentry events through a sentry-sdk
``Transport`` that keeps them (after the same scrubbing as real events). The request
hooks, the scrubber and the span code are the package's real ones; only where the data
ends up differs. Sentry is on in captured apps even without a DSN, and spans are
recorded by the app's sampler even without a collector. Nothing goes to Sentry (events nor
spans), even with a ``SENTRY_DSN`` in the environment ``ObservabilityPlugin()`` reads; spans
and metrics go to a collector only if the app's config names one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentry_sdk.transport import Transport

from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal.records import MetricRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from sentry_sdk.envelope import Envelope

__all__ = ["ObservabilityCapture", "obs_capture"]

R = TypeVar("R", bound=MetricRecord)


class _Forward(SpanExporter):
    """One app's door to the shared in-memory exporter; an app's shutdown does not close it."""

    def __init__(self, target: InMemorySpanExporter) -> None:
        self.target = target

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.target.export(spans)


class _EventTransport(Transport):
    """A sentry-sdk transport that keeps every event instead of sending it."""

    def __init__(self, capture: ObservabilityCapture) -> None:
        super().__init__()
        self._capture = capture

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            event = item.get_event()
            if event is not None:
                self._capture.keep_event(dict(event))


class ObservabilityCapture:
    """Everything the apps started during one test produced, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[MetricRecord] = []
        self._events: list[dict[str, Any]] = []
        self._spans = InMemorySpanExporter()

    # ------------------------------------------------------------------ what tests read

    @property
    def metrics(self) -> list[MetricRecord]:
        """Every metric record, in the order they were made (``api_latency`` and your own records included)."""
        with self._lock:
            return list(self._metrics)

    @overload
    def records(self) -> list[MetricRecord]: ...
    @overload
    def records(self, kind: type[R]) -> list[R]: ...
    def records(self, kind: type[MetricRecord] = MetricRecord) -> list[Any]:
        """The records of one type, typed as it: ``records(GraphQueryMetric)``, ``records(CacheLookup)``.

        Subclasses of ``kind`` are included; with no argument, every record (as :attr:`metrics`).
        """
        return [metric for metric in self.metrics if isinstance(metric, kind)]

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        """Every finished span that the apps' samplers recorded."""
        return self._spans.get_finished_spans()

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``; fails the test if there are none or several."""
        found = [span for span in self.spans if span.name == name]
        if len(found) != 1:
            names = sorted({span.name for span in self.spans})
            raise AssertionError(f"expected one span named {name!r}, found {len(found)}; span names: {names}")
        return found[0]

    @property
    def sentry_events(self) -> list[dict[str, Any]]:
        """Every Sentry event, as sent (after scrubbing)."""
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        """Forget everything captured so far."""
        with self._lock:
            self._metrics.clear()
            self._events.clear()
        self._spans.clear()

    # ------------------------------------------------------------------ what apps call

    def on_metric(self, metric: MetricRecord) -> None:
        with self._lock:
            self._metrics.append(metric)

    def keep_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)

    def span_exporter(self) -> SpanExporter:
        return _Forward(self._spans)

    def sentry_transport(self) -> Transport:
        return _EventTransport(self)


@pytest.fixture
def obs_capture() -> Iterator[ObservabilityCapture]:
    """Capture the metric records, spans and Sentry events of every app started during the test.

    Start the app inside the test (``with TestClient(app)`` / ``async with AsyncTestClient(app)``),
    so its lifespan runs while the capture is installed.
    """
    capture = ObservabilityCapture()
    remove = runtime.install_capture(capture)
    try:
        yield capture
    finally:
        remove()
