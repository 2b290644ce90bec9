"""A pytest plugin for users' own tests: assert on the records, spans and Sentry events an app made.

Registered through the ``pytest11`` entry point, so installing the package is enough::

    async def test_graph_query_is_timed(obs_capture: ObservabilityCapture) -> None:
        async with AsyncTestClient(app=create_app()) as client:
            await client.post("/graph/query", json={"query": "MATCH (n) RETURN n"})
        (record,) = obs_capture.records(GraphQueryMetric)
        assert record.result_count == 3

A test that asks for ``obs_capture`` gets it before any other function-scoped fixture (an
autouse fixture requests it first), so an app started by a ``client`` fixture is captured
whatever the order of the test's arguments. An app already running when the capture starts
(one started by a module- or session-scoped fixture, or one an earlier test left running)
would be missed, so the test errors at set-up and says what to do.

While the capture is active, every app whose lifespan starts gets in-memory sinks besides
its configured ones: metric records as typed records, finished spans through
OpenTelemetry's own ``InMemorySpanExporter``, and Sentry events through a sentry-sdk
``Transport`` that keeps them (after the same scrubbing as real events). The request hooks,
the scrubber and the span code are the package's real ones; only where the data ends up
differs. Whatever the environment holds (``SENTRY_DSN``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``APP_ENV=production``): nothing leaves the process (no Sentry event, no span to Sentry or to
a collector, no OTLP metric; lines meant for a file go to stdout, which pytest captures), Sentry
is on (in memory) even without a DSN, and every span is
recorded (sampler ``always_on``) unless the test is marked
``@pytest.mark.obs_capture(sampling="app")``, which keeps the app's own sampler.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import msgspec
import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentry_sdk.transport import Transport

from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal.records import MetricRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from sentry_sdk.envelope import Envelope

    from litestar_omnii_obs._internal.config import ObservabilityConfig

__all__ = ["ObservabilityCapture", "obs_capture"]

R = TypeVar("R", bound=MetricRecord)
#: ``all``: every span is recorded (sampler ``always_on``); ``app``: the app's own sampler decides.
Sampling = Literal["all", "app"]
SAMPLING_CHOICES: tuple[Sampling, ...] = ("all", "app")


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
    """Everything the apps started during one test produced, in memory.

    ``sampling``: ``"all"`` (the default) records every span whatever sampler the app's
    config names; ``"app"`` keeps the app's sampler (to test sampling itself).
    """

    def __init__(self, sampling: Sampling = "all") -> None:
        if sampling not in SAMPLING_CHOICES:
            raise ValueError(f"sampling={sampling!r}: expected one of {', '.join(SAMPLING_CHOICES)}")
        self.sampling: Sampling = sampling
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
        """Every finished span (all of them, unless the test asked for the app's sampler)."""
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

    def confine(self, config: ObservabilityConfig) -> ObservabilityConfig:
        """``config`` with no collector endpoint and, unless the test asked for the app's own sampling,
        sampler ``always_on`` and no ``traces_sampler``. A file sink named by the shell's
        ``OMNII_OBS_METRICS_SINK`` (which a log shipper may tail) becomes stdout; a file the test's own code
        names stays, for the test to read.

        Sentry needs nothing here: a captured app's Sentry client has the in-memory transport, and its
        spans never go to Sentry's OTLP endpoint.
        """
        tracing = msgspec.structs.replace(
            config.tracing, otlp_endpoint=None, otlp_traces_endpoint=None, otlp_metrics_endpoint=None
        )
        metrics = config.metrics
        if metrics.sink not in ("stdout", "stderr", "off") and metrics.sink == os.environ.get("OMNII_OBS_METRICS_SINK"):
            metrics = msgspec.structs.replace(metrics, sink="stdout")  # the shell's file, which a shipper may tail
        if self.sampling == "app":
            return msgspec.structs.replace(config, tracing=tracing, metrics=metrics)
        tracing = msgspec.structs.replace(tracing, sampler="always_on", sampler_arg=None)
        return msgspec.structs.replace(config, tracing=tracing, metrics=metrics, traces_sampler=None)

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "obs_capture(sampling='all'): how obs_capture treats the apps' sampling: 'all' (default) records every "
        "span, 'app' keeps the app's own sampler",
    )


@pytest.fixture(autouse=True)
def _obs_capture_before_apps(request: pytest.FixtureRequest) -> None:
    """Set ``obs_capture`` up before the test's other function-scoped fixtures, whatever their order.

    Autouse fixtures are set up first, so a ``client`` fixture that starts an app finds the
    capture installed even when it is listed before ``obs_capture``.
    """
    if "obs_capture" in request.fixturenames:
        request.getfixturevalue("obs_capture")


def _sampling_asked(request: pytest.FixtureRequest) -> Sampling:
    marker = request.node.get_closest_marker("obs_capture")
    if marker is None:
        return "all"
    unknown = set(marker.kwargs) - {"sampling"}
    sampling = marker.kwargs.get("sampling", "all")
    if marker.args or unknown or sampling not in SAMPLING_CHOICES:
        pytest.fail(
            f"@pytest.mark.obs_capture{marker.args or ''}{marker.kwargs}: the marker takes only "
            f"sampling={' or '.join(repr(c) for c in SAMPLING_CHOICES)}",
            pytrace=False,
        )
    return sampling  # type: ignore[no-any-return]


def _refuse_running_apps() -> None:
    """Fail the test's set-up when an app is already running: the capture could not see it."""
    started = runtime.running()
    if not started:
        return
    apps = ", ".join(f"service {r.config.service_name!r} (environment {r.config.environment!r})" for r in started)
    pytest.fail(
        f"obs_capture: {len(started)} app(s) with ObservabilityPlugin already running when the capture started: "
        f"{apps}. Their records, spans and Sentry events would not be captured, and they would still send to "
        "the destinations their configuration names. Start the app after the capture: inside the test "
        "(`with TestClient(app)` / `async with AsyncTestClient(app)`) or in a function-scoped fixture (in any "
        "order with obs_capture). An app started by a module- or session-scoped fixture cannot be captured per "
        "test; an app an earlier test left running must be shut down (leave its TestClient's `with` block).",
        pytrace=False,
    )


@pytest.fixture
def obs_capture(request: pytest.FixtureRequest) -> Iterator[ObservabilityCapture]:
    """Capture the metric records, spans and Sentry events of every app started during the test.

    Set up before the test's other function-scoped fixtures, so an app started by one of them is
    captured; an app already running fails the test's set-up with what to do. Nothing the apps
    make leaves the process, and every span is recorded unless the test is marked
    ``@pytest.mark.obs_capture(sampling="app")``.
    """
    sampling = _sampling_asked(request)
    _refuse_running_apps()
    capture = ObservabilityCapture(sampling)
    remove = runtime.install_capture(capture)
    try:
        yield capture
    finally:
        remove()
