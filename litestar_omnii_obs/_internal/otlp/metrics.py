"""The OTLP metric exporter: the SDK's metric points (plus the request durations), our encoder, our transports.

The SDK's OTLP metric exporters import protobuf and, over gRPC, the SDK's whole exporter stack
(issue 22: a few MiB and about 70 ms at start-up); :func:`.metric_encoding.encode_metrics` writes
the same request bytes, and the span transports send them, so a collector's outage is judged,
logged and counted by the same rule (:class:`~litestar_omnii_obs._internal.health.PeerHealth`)
for metrics as for spans. Imported only when metrics are exported: the SDK's metrics package comes with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)

from litestar_omnii_obs._internal.durations import SCOPE
from litestar_omnii_obs._internal.health import ENCODING
from litestar_omnii_obs._internal.otlp.metric_encoding import encode_metrics
from litestar_omnii_obs._internal.otlp.targets import collector_transport
from litestar_omnii_obs._internal.otlp.transports import HealthLabels

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import Metric
    from opentelemetry.sdk.metrics.view import Aggregation

    from litestar_omnii_obs._internal.durations import RequestDurations
    from litestar_omnii_obs._internal.otlp.targets import OtlpProtocol
    from litestar_omnii_obs._internal.otlp.transports import Compression, OtlpTransport

__all__ = ["OtlpMetricExporter", "build_metric_exporter", "metric_preferences"]

_logger = logging.getLogger("litestar_omnii_obs")
_LABELS = HealthLabels("OTLP metric export", "export", "OTEL_METRICS_EXPORTER=none")
_DELTAS_LOST = "not sent while the collector was down (delta points)"
#: The last export at shutdown did not reach the collector: what it carried is gone with the process.
_FINAL_LOST = "final export not delivered (points since the last accepted export)"
_FINAL_CUT_OFF = "final export cut off by the shutdown timeout"


def build_metric_exporter(
    endpoint: str | None,
    protocol: OtlpProtocol = "http/protobuf",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    *,
    metrics_endpoint: str | None = None,
    compression: Compression = "none",
    insecure: bool | None = None,
    durations: RequestDurations | None = None,
    preferred_temporality: dict[type, AggregationTemporality] | None = None,
    preferred_aggregation: dict[type, Aggregation] | None = None,
) -> OtlpMetricExporter:
    """An exporter sending to ``metrics_endpoint`` (as is) or ``endpoint`` (generic) over ``protocol``.

    ``http/protobuf``: ``/v1/metrics`` appended to a generic endpoint.
    ``grpc`` (the ``grpc`` extra): ``MetricsService/Export``, TLS unless the scheme is ``http``.
    User-info in the URL is sent as ``Authorization: Basic``, never kept in the URL. Raises
    ``ImportError`` naming the extra when gRPC is asked for and grpcio is not installed.
    """
    transport = collector_transport(
        "metrics",
        endpoint,
        metrics_endpoint,
        protocol,
        headers=headers,
        timeout=timeout,
        compression=compression,
        insecure=insecure,
        labels=_LABELS,
    )
    return OtlpMetricExporter(
        transport,
        durations,
        preferred_temporality=preferred_temporality,
        preferred_aggregation=preferred_aggregation,
    )


def metric_preferences(temporality: str, histogram_aggregation: str) -> dict[str, Any]:
    """``preferred_temporality`` and ``preferred_aggregation`` as the SDK's OTLP exporters derive them from
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` and ``..._DEFAULT_HISTOGRAM_AGGREGATION``."""
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.view import (
        ExplicitBucketHistogramAggregation,
        ExponentialBucketHistogramAggregation,
    )

    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    deltas = {"delta": (Counter, Histogram, ObservableCounter), "lowmemory": (Counter, Histogram)}.get(temporality, ())
    kinds = (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
    histogram: Aggregation = (
        ExponentialBucketHistogramAggregation()
        if histogram_aggregation == "base2_exponential_bucket_histogram"
        else ExplicitBucketHistogramAggregation()
    )
    return {
        "preferred_temporality": {kind: delta if kind in deltas else cumulative for kind in kinds},
        "preferred_aggregation": {Histogram: histogram},
    }


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


class OtlpMetricExporter(MetricExporter):
    """Each periodic export as one OTLP request (with the request durations added); one outage rule.

    While the collector is down an export is attempted at most every probe interval
    (:attr:`health`). Cumulative points (the default) lose nothing when an export is skipped or
    fails, as long as a later one is accepted: only a final export at shutdown that fails loses
    data, counted. With delta temporality every skipped or failed export is counted as lost.
    """

    def __init__(
        self,
        transport: OtlpTransport,
        durations: RequestDurations | None = None,
        *,
        preferred_temporality: dict[type, AggregationTemporality] | None = None,
        preferred_aggregation: dict[type, Aggregation] | None = None,
    ) -> None:
        super().__init__(preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation)
        #: Delta points are in one export only: a skipped or failed one loses them (counted).
        self.deltas = any(t is AggregationTemporality.DELTA for t in (preferred_temporality or {}).values())
        self.transport = transport
        self.health = transport.health
        self.durations = durations
        #: Set by the app's shutdown: the next export is the last one (a down collector gets one last attempt).
        self.final = False
        self._encoding_failed = False
        self._lock = threading.Lock()
        self._final_done = False  # the final export's outcome is counted
        self._cut_off = False  # the shutdown gave up first: the final export was counted as lost then

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        final = self.final
        health = self.health
        if final:
            health.last_chance()
        if not health.begin():
            if final and not self._finish_final():
                return MetricExportResult.FAILURE  # counted when the shutdown gave up on it
            if self.deltas:
                health.lose(1, _DELTAS_LOST)
            elif final:
                health.lose(1, _FINAL_LOST)
            return MetricExportResult.FAILURE  # down: cumulative points wait for the next probe
        try:
            extra = self.durations.metric() if self.durations is not None else None
            if extra is not None:
                metrics_data = _with_extra(metrics_data, extra)
            body = encode_metrics(metrics_data)
        except Exception as exc:  # a point OTLP cannot carry (an int beyond int64): not the collector's fault
            if final and not self._finish_final():
                return MetricExportResult.FAILURE
            health.lose(1, ENCODING)
            if not self._encoding_failed:
                self._encoding_failed = True
                _logger.error(
                    "an OTLP metric export could not be encoded (%s: %s); it is counted as lost",
                    type(exc).__name__,
                    exc,
                )
            return MetricExportResult.FAILURE
        outcome = self.transport.post_once(body)
        if final and not self._finish_final():
            return MetricExportResult.FAILURE  # counted when the shutdown gave up on it
        if outcome.ok:
            health.succeeded(1, outcome.pause)
            if outcome.refused or outcome.message:
                # One export, some of whose points were refused: the count of points goes in the message.
                health.refused(
                    1 if outcome.refused else 0, outcome.message or f"{outcome.refused} data point(s) refused"
                )
            return MetricExportResult.SUCCESS
        health.failed(outcome.reason, retry_after=outcome.retry_after, limited=outcome.limited)
        if self.deltas:
            health.lose(1, _DELTAS_LOST)
        elif final:
            health.lose(1, _FINAL_LOST)
        return MetricExportResult.FAILURE

    def _finish_final(self) -> bool:
        """The final export ended: ``True`` if its outcome is still ours to count (the shutdown did not give up).

        Every way out of the final export passes here once, so :meth:`abandon` never counts it a second time.
        """
        with self._lock:
            self._final_done = True
            return not self._cut_off

    def abandon(self) -> None:
        """The shutdown's bound is reached: a final export not finished (or not begun) is counted as lost, once."""
        with self._lock:
            if self._final_done or self._cut_off:
                return
            self._cut_off = True
        self.health.lose(1, _FINAL_CUT_OFF)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True  # every export is sent when it is made

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.transport.close()
