"""OTLP encoding and transports: spans to a collector (gRPC or HTTP) and to Sentry, metrics to a collector.

Typical wiring (in the lifespan)::

    exporter = FanOutSpanExporter([
        CollectorTarget(endpoint, protocol="http/protobuf", headers=headers, timeout=5.0),
        SentryTarget.from_dsn(dsn, rate=0.1, timeout=5.0),
    ])
    tracer_provider.add_span_processor(SpanBatcher(exporter))  # encodes each span as it ends
    # Metrics (.metrics, imported only when they are exported): our encoder over the same transports.
    metric_exporter = build_metric_exporter(endpoint, protocol, headers, timeout, durations=durations)

Each span is encoded once, when it ends; every endpoint's outage is logged once and probed every 2 s, and
what it loses is counted (``exporter.dropped()``, ``exporter.report()``).
"""

from litestar_omnii_obs._internal.otlp.encoding import EncodedBatch, encode_spans
from litestar_omnii_obs._internal.otlp.exporter import FanOutSpanExporter
from litestar_omnii_obs._internal.otlp.targets import CollectorTarget, OtlpProtocol, SentryTarget, Target, signal_url
from litestar_omnii_obs._internal.otlp.transports import Compression, OtlpHttpTransport, OtlpTransport

__all__ = [
    "CollectorTarget",
    "Compression",
    "EncodedBatch",
    "FanOutSpanExporter",
    "OtlpHttpTransport",
    "OtlpProtocol",
    "SentryTarget",
    "Target",
    "OtlpTransport",
    "encode_spans",
    "signal_url",
]
