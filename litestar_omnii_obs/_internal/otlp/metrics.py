"""The OTLP metric exporter for a protocol: the OpenTelemetry project's own, over gRPC or HTTP.

Metrics leave once per export interval as one small request, so the SDK exporters' per-object
encoding costs nothing worth replacing; only the choice of exporter and its settings (the
same endpoint, TLS and credential rules as the span transports) live here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter

from litestar_omnii_obs._internal.otlp.targets import OtlpProtocol, signal_url
from litestar_omnii_obs._internal.otlp.transports import Compression, split_credentials

__all__ = ["HTTP_EXTRA_HINT", "build_metric_exporter"]

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
