"""The OTLP metric exporter for a protocol: the OpenTelemetry project's own, over gRPC or HTTP.

Metrics leave once per export interval as one small request, so the SDK exporters' per-object
encoding costs nothing worth replacing; only the choice of exporter and its settings (the
same endpoint, TLS and credential rules as the span transports) live here, and
:class:`DurationsExporter`, which adds the request durations to each export.

Imported only when metrics are exported: the SDK's metrics package comes with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)

from litestar_omnii_obs._internal._compat import exporter_preferences, take_export_failure
from litestar_omnii_obs._internal.durations import SCOPE, RequestDurations
from litestar_omnii_obs._internal.otlp.targets import signal_url
from litestar_omnii_obs._internal.otlp.transports import split_credentials

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import Metric

    from litestar_omnii_obs._internal.health import PeerHealth
    from litestar_omnii_obs._internal.otlp.targets import OtlpProtocol
    from litestar_omnii_obs._internal.otlp.transports import Compression

__all__ = ["HTTP_EXTRA_HINT", "DurationsExporter", "build_metric_exporter"]

#: What to install for ``http/protobuf`` metrics.
HTTP_EXTRA_HINT = "pip install 'litestar-omnii-obs[http]'"


def build_metric_exporter(
    endpoint: str | None,
    protocol: OtlpProtocol = "grpc",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    *,
    metrics_endpoint: str | None = None,
    compression: Compression | None = None,
    insecure: bool | None = None,
    **options: Any,
) -> MetricExporter:
    """An SDK ``MetricExporter`` sending to ``metrics_endpoint`` (as is) or ``endpoint`` (generic).

    ``grpc``: ``opentelemetry.exporter.otlp.proto.grpc``'s ``OTLPMetricExporter`` (TLS unless
    the scheme is ``http``). ``http/protobuf``: ``opentelemetry.exporter.otlp.proto.http``'s
    (the ``http`` extra; ``/v1/metrics`` appended to a generic endpoint, gzip by default).
    User-info in the URL is sent as ``Authorization: Basic``, never kept in the URL.
    ``options`` go to the exporter (``preferred_temporality``, ``preferred_aggregation``...).
    Raises ``ImportError`` naming the extra when the HTTP exporter is not installed.
    """
    extra = {key: value for key, value in (headers or {}).items()}
    if protocol == "grpc":
        return _grpc_exporter(metrics_endpoint or endpoint, extra, timeout, compression, insecure, options)
    if protocol == "http/protobuf":
        return _http_exporter(endpoint, metrics_endpoint, extra, timeout, compression, options)
    raise ValueError(f"unsupported OTLP protocol {protocol!r} (grpc or http/protobuf)")


def _grpc_exporter(
    address: str | None,
    headers: dict[str, str],
    timeout: float,
    compression: Compression | None,
    insecure: bool | None,
    options: dict[str, Any],
) -> MetricExporter:
    """The SDK's gRPC exporter: plaintext only for ``http://``, the URL's credentials sent as metadata."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

    if not address:
        raise ValueError("no OTLP endpoint for metrics")
    url = address if "://" in address else f"//{address}"
    parts, basic = split_credentials(url)
    metadata = {key.lower(): value for key, value in headers.items()}
    if basic is not None:
        metadata.setdefault("authorization", basic)
    if insecure is None:
        insecure = parts.scheme == "http"
    return GrpcExporter(
        # Without user-info; with its scheme when it had one (the SDK reads TLS from "https").
        endpoint=parts._replace(path="", query="", fragment="").geturl().removeprefix("//"),
        insecure=insecure and parts.scheme != "https",
        headers=metadata,
        timeout=timeout,
        compression=_grpc_compression(compression or "none"),
        **options,
    )


def _http_exporter(
    endpoint: str | None,
    metrics_endpoint: str | None,
    headers: dict[str, str],
    timeout: float,
    compression: Compression | None,
    options: dict[str, Any],
) -> MetricExporter:
    """The SDK's HTTP exporter (the ``http`` extra: its absence says what to install), credentials as a header."""
    try:
        from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
    except ImportError as exc:
        raise ImportError(
            f"OTLP metrics over http/protobuf need the 'http' extra: {HTTP_EXTRA_HINT} "
            "(or use OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=grpc)"
        ) from exc
    parts, basic = split_credentials(signal_url(endpoint, metrics_endpoint, "metrics"))
    if basic is not None and not any(key.lower() == "authorization" for key in headers):
        headers["Authorization"] = basic
    return HttpExporter(
        endpoint=parts.geturl(),
        headers=headers,
        timeout=timeout,
        compression=HttpCompression.Gzip if (compression or "gzip") == "gzip" else HttpCompression.NoCompression,
        **options,
    )


def _grpc_compression(compression: Compression) -> Any:
    import grpc  # type: ignore[import-untyped]

    return grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression


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
            self.health.failed(take_export_failure() or "export failed")
            if final:
                self.health.lose(1, "final export failed (points since the last accepted export)")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
