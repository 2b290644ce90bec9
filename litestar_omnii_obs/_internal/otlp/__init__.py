"""OTLP encoding and transports: spans to a collector (gRPC or HTTP) and to Sentry, metrics to a collector.

Typical wiring (in the lifespan)::

    exporter = FanOutSpanExporter([
        CollectorTarget(endpoint, protocol="grpc", headers=headers, timeout=5.0),
        SentryTarget.from_dsn(dsn, rate=0.1, timeout=5.0),
    ])
    tracer_provider.add_span_processor(SpanBatcher(exporter))  # encodes each span as it ends
    metric_exporter = build_metric_exporter(endpoint, protocol, headers, timeout)

Each span is encoded once, when it ends; every endpoint's outage is logged once and probed every 2 s, and
what it loses is counted (``exporter.dropped()``, ``exporter.report()``).
"""

from litestar_omnii_obs._internal.otlp.encoding import EncodedBatch, encode_spans
from litestar_omnii_obs._internal.otlp.exporter import FanOutSpanExporter
from litestar_omnii_obs._internal.otlp.metrics import HTTP_EXTRA_HINT, build_metric_exporter
from litestar_omnii_obs._internal.otlp.targets import CollectorTarget, OtlpProtocol, SentryTarget, Target, signal_url
from litestar_omnii_obs._internal.otlp.transports import (
    Compression,
    OtlpGrpcTransport,
    OtlpHttpTransport,
    OtlpTransport,
)

__all__ = [
    "HTTP_EXTRA_HINT",
    "CollectorTarget",
    "Compression",
    "EncodedBatch",
    "FanOutSpanExporter",
    "OtlpGrpcTransport",
    "OtlpHttpTransport",
    "OtlpProtocol",
    "SentryTarget",
    "Target",
    "OtlpTransport",
    "build_metric_exporter",
    "encode_spans",
    "signal_url",
]
