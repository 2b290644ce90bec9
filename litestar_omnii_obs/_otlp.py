"""The SDK's OTLP/gRPC span exporter with the fast encoder (kept until tracing.py uses :mod:`.otlp`).

The encoder itself lives in :mod:`litestar_omnii_obs.otlp.encoding`; ``encode_spans`` is
re-exported here so existing imports keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from litestar_omnii_obs.otlp.encoding import encode_spans

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["FastOTLPSpanExporter", "encode_spans"]


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter with :func:`encode_spans` as its encoder."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(encode_spans(data))
        return request
