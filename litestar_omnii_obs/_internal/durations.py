"""``http.server.request.duration``, aggregated in-process and exported with the SDK's metrics.

The SDK's ``Histogram.record`` costs 12-22 µs a call on the request path (attribute
hashing, view matching, exemplar reservoirs); :class:`RequestDurations` keeps the same
cumulative explicit-bucket histogram per attribute set for a deque append on the request
(folded in by a background thread), and :class:`DurationsExporter` hands the points to
the OTLP metric exporter each time the periodic reader exports. Series are capped like
the SDK's own cardinality limit: past ``max_series`` attribute sets, points go to one
overflow series (``otel.metric.overflow=true``).
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as SdkHistogram
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from litestar_omnii_obs._internal._compat import exporter_preferences
from litestar_omnii_obs._internal.health import PeerHealth

__all__ = ["HTTP_DURATION_BUCKETS", "DurationsExporter", "RequestDurations"]

#: Semantic-convention bucket boundaries for ``http.server.request.duration`` (seconds).
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: The SDK's default cardinality limit per metric.
MAX_SERIES = 2000

SCOPE = InstrumentationScope("litestar_omnii_obs")
_OVERFLOW: tuple[Any, ...] = ("overflow",)

_Key = tuple[str, str, int, str, str | None]
#: One request as the hook hands it over: seconds, method, route, status, scheme, error type.
_Request = tuple[float, str, str, int, str, "str | None"]


class RequestDurations:
    """Cumulative histogram points keyed by (method, route, status, scheme, error type).

    A request only appends its values to a deque (no lock, no bucket search on the event
    loop); a daemon thread folds them into the points every ``fold_interval`` seconds, and
    every snapshot folds what is left first, so nothing recorded is missing from an export.
    """

    def __init__(
        self, bounds: Sequence[float] = HTTP_DURATION_BUCKETS, max_series: int = MAX_SERIES, fold_interval: float = 0.1
    ) -> None:
        self.bounds = tuple(bounds)
        self.max_series = max_series
        self.start = time.time_ns()
        self._lock = threading.Lock()
        self._points: dict[tuple[Any, ...], list[Any]] = {}
        self._pending: deque[_Request] = deque()
        self._fold_interval = fold_interval
        self._folder: threading.Thread | None = None
        self._stop = threading.Event()

    def record(self, seconds: float, method: str, route: str, status: int, scheme: str, error: str | None) -> None:
        """Count one request (called on every request: an append, folded in later)."""
        self._pending.append((seconds, method, route, status, scheme, error))
        if self._folder is None:
            self._start_folder()

    def fold(self) -> None:
        """Add the requests recorded since the last fold to their points."""
        pending = self._pending
        if not pending:
            return
        bounds, points, bucket = self.bounds, self._points, bisect.bisect_left
        with self._lock:
            while pending:
                seconds, method, route, status, scheme, error = pending.popleft()
                key = (method, route, status, scheme, error)
                point = points.get(key)
                if point is None:
                    point = self._new_point(key, seconds)
                point[0] += 1
                point[1] += seconds
                if seconds < point[2]:
                    point[2] = seconds
                if seconds > point[3]:
                    point[3] = seconds
                point[4][bucket(bounds, seconds)] += 1

    def close(self) -> None:
        """Stop the folding thread (what is pending is folded by the next snapshot)."""
        self._stop.set()

    def start_folding(self) -> None:
        """Start the folding thread (the lifespan calls this, so no request starts it)."""
        self._start_folder()

    def _start_folder(self) -> None:
        with self._lock:
            if self._folder is None:
                self._folder = threading.Thread(
                    target=_fold_periodically,
                    args=(weakref.ref(self), self._stop, self._fold_interval),
                    name="omnii-obs-durations",
                    daemon=True,
                )
                self._folder.start()

    def _new_point(self, key: tuple[Any, ...], seconds: float) -> list[Any]:
        """The point for a new attribute set, or the overflow series' once ``max_series`` sets exist."""
        if len(self._points) >= self.max_series:
            key = _OVERFLOW
            point = self._points.get(key)
            if point is not None:
                return point
        point = self._points[key] = [0, 0.0, seconds, seconds, [0] * (len(self.bounds) + 1)]
        return point

    @staticmethod
    def _attributes(key: tuple[Any, ...]) -> dict[str, Any]:
        if key == _OVERFLOW:
            return {"otel.metric.overflow": True}
        method, route, status, scheme, error = key
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status,
            "url.scheme": scheme,
        }
        if error is not None:
            attributes["error.type"] = error
        return attributes

    def metric(self) -> Metric | None:
        """A snapshot as an SDK ``Metric`` (cumulative), or ``None`` before the first request."""
        self.fold()
        now = time.time_ns()
        with self._lock:
            snapshot = [(key, list(point[:4]), list(point[4])) for key, point in self._points.items()]
        if not snapshot:
            return None
        points = [
            HistogramDataPoint(
                attributes=self._attributes(key),
                start_time_unix_nano=self.start,
                time_unix_nano=now,
                count=count,
                sum=total,
                bucket_counts=buckets,
                explicit_bounds=self.bounds,
                min=low,
                max=high,
            )
            for key, (count, total, low, high), buckets in snapshot
        ]
        return Metric(
            name="http.server.request.duration",
            description="Duration of HTTP server requests.",
            unit="s",
            data=SdkHistogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
        )


def _fold_periodically(ref: weakref.ref[RequestDurations], stop: threading.Event, interval: float) -> None:
    """The folding thread; holds its durations weakly, so it ends with them even if never closed."""
    while not stop.wait(interval):
        durations = ref()
        if durations is None:
            return
        durations.fold()
        del durations


def _with_extra(data: MetricsData, extra: Metric) -> MetricsData:
    """``data`` plus ``extra`` in this package's scope (the OTLP encoder keys scopes by name)."""
    if not data.resource_metrics:
        return data
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scope in enumerate(scopes):
        if scope.scope.name == SCOPE.name:
            scopes[index] = ScopeMetrics(
                scope=scope.scope, metrics=[*scope.metrics, extra], schema_url=scope.schema_url
            )
            break
    else:
        scopes.append(ScopeMetrics(scope=SCOPE, metrics=[extra], schema_url=""))
    merged = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=[merged, *rest])


class DurationsExporter(MetricExporter):
    """Wraps the OTLP metric exporter: adds the request durations to each export; one outage rule.

    While the collector is down an export is attempted at most every probe interval
    (:class:`~litestar_omnii_obs._internal.health.PeerHealth`); points are cumulative, so an export
    skipped or failed loses nothing as long as a later one is accepted. Only a final export
    at shutdown that fails loses data, and is counted.
    """

    def __init__(self, inner: MetricExporter, durations: RequestDurations, health: PeerHealth) -> None:
        super().__init__(**exporter_preferences(inner))
        self.inner = inner
        self.durations = durations
        self.health = health
        #: Set by the app's shutdown: the next export is the last one, attempted whatever the outage state.
        self.final = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        final = self.final
        if not final and not self.health.begin():
            return MetricExportResult.FAILURE  # down: cumulative points wait for the next probe
        extra = self.durations.metric()
        if extra is not None:
            metrics_data = _with_extra(metrics_data, extra)
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self.health.succeeded(1)
        else:
            self.health.failed("export failed")
            if final:
                self.health.lose(1, "final export failed (points since the last accepted export)")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
