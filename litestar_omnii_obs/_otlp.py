"""A faster encoder for OTLP trace export requests.

The SDK's exporter builds one protobuf object per span, attribute and value in Python,
about 100 µs per server span here: at 100% sampling that was more than the request
itself. This writes the same ``ExportTraceServiceRequest`` straight to protobuf wire
bytes (about a fifth of the cost) and lets the C parser turn them into the message the
gRPC stub sends. The test suite checks the result equals the SDK encoder's, field for
field, over spans with every attribute type, events, links, status and remote parents.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext

__all__ = ["FastOTLPSpanExporter", "encode_spans"]

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_MASK64 = (1 << 64) - 1


def _varint_slow(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(_varint_slow(i) for i in range(1 << 14))
_LEN_TAGS = tuple(_varint_slow(n << 3 | 2) for n in range(20))
# Encoded attributes repeat across spans (method, route, status, host): keep them, up to a bound.
_ATTRIBUTE_CACHE: dict[tuple[int, str, type, Any], bytes] = {}
_ATTRIBUTE_CACHE_MAX = 4096


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _varint_slow(value)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    size = len(payload)
    return _LEN_TAGS[number] + (_SMALL_VARINTS[size] if size < 16384 else _varint_slow(size)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode()) if value else b""


def _any_value(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value & _MASK64)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _text(1, key) + _field(2, _any_value(value))


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    cache = _ATTRIBUTE_CACHE
    parts = []
    for key, value in attributes.items():
        cache_key = (number, key, type(value), value)
        try:
            parts.append(cache[cache_key])
            continue
        except KeyError:
            encoded = _field(number, _key_value(key, value))
            if len(cache) >= _ATTRIBUTE_CACHE_MAX:
                cache.clear()
            cache[cache_key] = encoded
        except TypeError:  # unhashable value (a list)
            encoded = _field(number, _key_value(key, value))
        parts.append(encoded)
    return b"".join(parts)


def _count(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _flags(number: int, parent: SpanContext | None) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _varint(number << 3 | 5) + _pack_fixed32(flags)


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_text(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_text(5, span.name))
    parts.append(b"\x30" + _varint(span.kind.value + 1))
    if span.start_time:
        parts.append(b"\x39" + _pack_fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _pack_fixed64(span.end_time))
    parts.append(_attributes(9, span.attributes))
    parts.append(_count(10, span.dropped_attributes))
    for event in span.events:
        body = b"\x09" + _pack_fixed64(event.timestamp) if event.timestamp else b""
        body += _text(2, event.name) + _attributes(3, event.attributes) + _count(4, event.dropped_attributes)
        parts.append(_field(11, body))
    parts.append(_count(12, span.dropped_events))
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(4, link.attributes) + _count(5, link.dropped_attributes) + _flags(6, link.context)
        parts.append(_field(13, body))
    parts.append(_count(14, span.dropped_links))
    status = span.status
    if status is not None:
        body = _text(2, status.description or "") + _count(3, status.status_code.value)
        parts.append(_field(15, body))
    parts.append(_flags(16, parent))
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    return _text(1, scope.name) + _text(2, scope.version or "") + _attributes(3, scope.attributes)


def _resource(resource: Resource) -> bytes:
    return _attributes(1, resource.attributes)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """``ExportTraceServiceRequest`` wire bytes for ``spans``, grouped by resource and scope."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        by_scope = grouped.setdefault(span.resource, {})
        by_scope.setdefault(span.instrumentation_scope or None, []).append(_field(2, _span(span)))
    request: list[bytes] = []
    for resource, by_scope in grouped.items():
        body = [_field(1, _resource(resource))]
        for scope, encoded in by_scope.items():
            scope_body = _field(1, _scope(scope)) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_body += _text(3, scope.schema_url)
            body.append(_field(2, scope_body))
        if resource.schema_url:
            body.append(_text(3, resource.schema_url))
        request.append(_field(1, b"".join(body)))
    return b"".join(request)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter with :func:`encode_spans` as its encoder."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(encode_spans(data))
        return request
