"""OTLP trace request encoding: each span to protobuf wire bytes once, requests assembled per target.

The SDK's exporter builds one protobuf object per span, attribute and value in Python,
about 100 µs per server span here: at 100% sampling that was more than the request
itself. This writes the same ``ExportTraceServiceRequest`` straight to protobuf wire
bytes (about a fifth of the cost). The test suite checks the result equals the SDK
encoder's, field for field, over spans with every attribute type, events, links, status
and remote parents, for whole batches and for subsets.

Each span is encoded once, when it ends (:meth:`SpanGroups.encode`), and waits for export as
bytes. A batch can go to several targets (the collector gets every span, Sentry the traces
under its rate): a request for a subset is the concatenation of the same per-span bytes under
their resource and scope headers (:class:`EncodedBatch`), and a target that takes every span
gets the whole request's bytes, built once.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, Status, TraceState

__all__ = ["EncodedBatch", "EncodedSpan", "SpanGroups", "encode_batch", "encode_spans"]

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


def _small_varints() -> tuple[bytes, ...]:
    """Every varint below 2**14: one byte below 128, else the low 7 bits (high bit set) then the high 7.

    Built by concatenating byte pairs: 0.7 ms when this module loads (at an app's first export), against
    5 ms through ``_varint_slow``.
    """
    one_byte = [bytes((i,)) for i in range(0x80)]
    low_bytes = [bytes((b,)) for b in range(0x80, 0x100)]
    return (*one_byte, *[low + high for high in one_byte[1:] for low in low_bytes])


_SMALL_VARINTS = _small_varints()
_LEN_TAGS = tuple(_varint_slow(n << 3 | 2) for n in range(20))
# Encoded attributes repeat across spans (method, route, status, host): keep them, up to a bound.
_ATTRIBUTE_CACHE: dict[tuple[int, str, type, Any], bytes] = {}
_ATTRIBUTE_CACHE_MAX = 4096
#: Only values whose type and equality decide their bytes (True and 1 differ by type, kept in the key).
_CACHED_KINDS = frozenset({str, int, bool})
_NAMES: dict[str, bytes] = {}  # span names repeat (one per route): their field bytes, up to the same bound
_SERVER_KIND = b"\x30\x02"  # kind (field 6) = SPAN_KIND_SERVER
_UNSET_STATUS = b"\x7a\x00"  # status (field 15), empty: code UNSET, no message


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _varint_slow(value)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    size = len(payload)
    return _LEN_TAGS[number] + (_SMALL_VARINTS[size] if size < 16384 else _varint_slow(size)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode()) if value else b""


def _bool_value(value: bool) -> bytes:
    """``AnyValue.bool_value`` (field 2): checked before int, since a bool is an int."""
    return b"\x10\x01" if value else b"\x10\x00"


def _str_value(value: str) -> bytes:
    """``AnyValue.string_value`` (field 1), UTF-8."""
    return _field(1, value.encode())


def _int_value(value: int) -> bytes:
    """``AnyValue.int_value`` (field 3): an int64, negatives as their two's complement varint."""
    return b"\x18" + _varint(value & _MASK64)


def _float_value(value: float) -> bytes:
    """``AnyValue.double_value`` (field 4), fixed 64-bit."""
    return b"\x21" + _pack_double(value)


def _bytes_value(value: bytes) -> bytes:
    """``AnyValue.bytes_value`` (field 7)."""
    return _field(7, value)


def _array_value(value: Sequence[Any]) -> bytes:
    """``AnyValue.array_value`` (field 5): an ``ArrayValue`` of each item's ``AnyValue``."""
    return _field(5, b"".join(_field(1, _any_value(item)) for item in value))


def _kvlist_value(value: Mapping[Any, Any]) -> bytes:
    """``AnyValue.kvlist_value`` (field 6): a ``KeyValueList``, keys as strings."""
    return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))


def _no_value(value: None) -> bytes:
    """``None``: an empty ``AnyValue``."""
    return b""


#: ``AnyValue`` encoders in the order a value's kind is decided (bool before int, str and bytes
#: before Sequence): what a subclass of these types is encoded as.
_VALUE_KINDS: tuple[tuple[type, Callable[[Any], bytes]], ...] = (
    (bool, _bool_value),
    (str, _str_value),
    (int, _int_value),
    (float, _float_value),
    (bytes, _bytes_value),
    (Sequence, _array_value),
    (Mapping, _kvlist_value),
)
#: The same encoders by exact type: one dict lookup instead of a chain of isinstance checks per value.
_VALUE_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    type(None): _no_value,
    **dict(_VALUE_KINDS[:5]),
    tuple: _array_value,
    list: _array_value,
    dict: _kvlist_value,
}


def _encoder_for(value: Any) -> Callable[[Any], bytes]:
    """The encoder of a value whose exact type is not in the table (a subclass, a range, a mapping proxy)."""
    for kind, encode in _VALUE_KINDS:
        if isinstance(value, kind):
            return encode
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message; raises ``TypeError`` for a value OTLP has no kind for."""
    encode = _VALUE_ENCODERS.get(type(value))
    if encode is None:
        encode = _encoder_for(value)
    return encode(value)


def _key_value(key: str, value: Any) -> bytes:
    return _text(1, key) + _field(2, _any_value(value))


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    cache = _ATTRIBUTE_CACHE
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        if kind not in _CACHED_KINDS:  # equal but encoded apart: (1,) and (1.0,), 0.0 and -0.0
            parts.append(_field(number, _key_value(key, value)))
            continue
        cache_key = (number, key, kind, value)
        encoded = cache.get(cache_key)
        if encoded is None:
            encoded = _field(number, _key_value(key, value))
            if len(cache) >= _ATTRIBUTE_CACHE_MAX:
                cache.clear()
            cache[cache_key] = encoded
        parts.append(encoded)
    return b"".join(parts)


def _uint(number: int, value: int) -> bytes:
    """A varint field (wire type 0), left out when zero (implicit presence)."""
    return _varint(number << 3) + _varint(value) if value else b""


def _flags(number: int, parent: SpanContext | None) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _varint(number << 3 | 5) + _pack_fixed32(flags)


def _trace_state(state: TraceState) -> bytes:
    """``trace_state`` (field 3) in its W3C header form, ``key=value`` pairs comma separated."""
    return _text(3, ",".join(f"{k}={v}" for k, v in state.items()))


def _name(name: str) -> bytes:
    """``name`` (field 5), kept in :data:`_NAMES`: span names repeat (one per route)."""
    if len(_NAMES) >= _ATTRIBUTE_CACHE_MAX:
        _NAMES.clear()
    encoded = _NAMES[name] = _text(5, name)
    return encoded


def _event(event: Event) -> bytes:
    """One ``Span.Event`` (field 11): time, name, attributes and their dropped count."""
    body = b"\x09" + _pack_fixed64(event.timestamp) if event.timestamp else b""
    body += _text(2, event.name) + _attributes(3, event.attributes) + _uint(4, event.dropped_attributes)
    return _field(11, body)


def _link(link: Link) -> bytes:
    """One ``Span.Link`` (field 13): the linked context, attributes, dropped count and remote flags."""
    body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
    body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
    body += _attributes(4, link.attributes) + _uint(5, link.dropped_attributes) + _flags(6, link.context)
    return _field(13, body)


def _status(status: Status | None) -> bytes:
    """``status`` (field 15); the usual unset status without a description is a constant."""
    if status is None:
        return b""
    code = status.status_code
    if code is StatusCode.UNSET and not status.description:
        return _UNSET_STATUS
    return _field(15, _text(2, status.description or "") + _uint(3, code.value))


def _span(span: ReadableSpan) -> bytes:
    """A ``Span`` message, fields in number order (what the SDK's protobuf encoder writes)."""
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_trace_state(context.trace_state))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    name = span.name
    encoded_name = _NAMES.get(name)
    parts.append(_name(name) if encoded_name is None else encoded_name)
    kind = span.kind
    parts.append(_SERVER_KIND if kind is SpanKind.SERVER else b"\x30" + _varint(kind.value + 1))
    if span.start_time:
        parts.append(b"\x39" + _pack_fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _pack_fixed64(span.end_time))
    parts.append(_attributes(9, span.attributes))
    parts.append(_uint(10, span.dropped_attributes))
    for event in span.events:
        parts.append(_event(event))
    parts.append(_uint(12, span.dropped_events))
    for link in span.links:
        parts.append(_link(link))
    parts.append(_uint(14, span.dropped_links))
    parts.append(_status(span.status))
    parts.append(_flags(16, parent))
    return b"".join(parts)


def _scope_parts(scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
    """``ScopeSpans`` bytes before its spans (the scope, field 1) and after them (its schema URL, field 3)."""
    if scope is None:
        return _field(1, b""), b""
    head = _field(1, _text(1, scope.name) + _text(2, scope.version or "") + _attributes(3, scope.attributes))
    return head, _text(3, scope.schema_url) if scope.schema_url else b""


def _resource_index(resources: list[Resource], resource: Resource) -> int:
    """``resource``'s index in ``resources``, appended if no equal one is there."""
    index = next((i for i, known in enumerate(resources) if known == resource), len(resources))
    if index == len(resources):
        resources.append(resource)
    return index


#: One span, encoded when it ended: (trace id, its resource-and-scope group in :class:`SpanGroups`, its
#: ``Span`` field bytes). Only an int, an int and bytes: the garbage collector stops tracking such a tuple
#: at its first collection, so spans waiting for export (up to a batch, longer than two young collections)
#: are no longer promoted to the oldest generation and walked by every full collection. (The 20-50 ms
#: full-collection pauses themselves came mostly from the start-up objects: ``ObservabilityConfig.freeze_gc``.)
EncodedSpan = tuple[int, int, bytes]

#: Resource and scope objects remembered by identity, at most (an app that makes a tracer per request makes
#: a scope object per request: beyond the bound they are found by equality, not kept alive).
_BY_ID_MAX = 256


class SpanGroups:
    """The resources and instrumentation scopes of one exporter's spans, each numbered and encoded once.

    A span is encoded when it ends (:meth:`encode`, in the request's thread); the batch it goes out in
    is assembled later from the bytes (:class:`EncodedBatch`), under the headers kept here.
    """

    __slots__ = ("_by_id", "_lock", "_resource_objects", "_scope_groups", "headers", "resources")

    def __init__(self) -> None:
        # (id(resource), id(scope)) -> group, with the two objects kept alive so an id is never reused.
        self._by_id: dict[tuple[int, int], tuple[int, object, object]] = {}
        self._resource_objects: list[Resource] = []
        self._scope_groups: dict[tuple[int, InstrumentationScope | None], int] = {}
        self._lock = threading.Lock()
        #: group -> (resource index, the ``ScopeSpans`` bytes before its spans, after them)
        self.headers: list[tuple[int, bytes, bytes]] = []
        #: resource index -> (its ``resource`` field bytes, its schema URL)
        self.resources: list[tuple[bytes, str]] = []

    def encode(self, span: ReadableSpan) -> EncodedSpan:
        """``span`` as an :data:`EncodedSpan`."""
        context = span.get_span_context()
        assert context is not None
        resource, scope = span.resource, span.instrumentation_scope or None
        known = self._by_id.get((id(resource), id(scope)))
        group = self._group(resource, scope) if known is None else known[0]
        return context.trace_id, group, _field(2, _span(span))

    def _group(self, resource: Resource, scope: InstrumentationScope | None) -> int:
        # Resource.__hash__ serialises its attributes to JSON and InstrumentationScope's is Python: found by
        # equality once per object, then by identity.
        with self._lock:
            index = _resource_index(self._resource_objects, resource)
            if index == len(self.resources):
                self.resources.append((_field(1, _attributes(1, resource.attributes)), resource.schema_url))
            group = self._scope_groups.get((index, scope))
            if group is None:
                group = self._scope_groups[index, scope] = len(self.headers)
                self.headers.append((index, *_scope_parts(scope)))
            if len(self._by_id) < _BY_ID_MAX:
                self._by_id[id(resource), id(scope)] = (group, resource, scope)
            return group


class EncodedBatch:
    """One batch of encoded spans, from which any subset's request is assembled.

    Why: the same batch goes to the collector (every span) and to Sentry (the traces under
    its rate); encoding a span costs far more than copying its bytes, so it is done once, when
    the span ends. The bytes of a request for a subset equal what encoding only that subset would
    give (resources and scopes in the order they first appear among the chosen spans).

    Assembling is joins of bytes: the export thread holds the GIL for well under a millisecond per
    512-span batch, where encoding there held it for up to 5.4 ms.
    """

    __slots__ = ("_full", "_groups", "_headers", "_resources", "_spans", "trace_ids")

    def __init__(self, spans: Sequence[EncodedSpan], groups: SpanGroups) -> None:
        self._headers = groups.headers
        self._resources = groups.resources
        self._groups = [group for _, group, _ in spans]
        self._spans = [encoded for _, _, encoded in spans]
        self._full: bytes | None = None
        #: Each span's trace id, in batch order (what targets choose spans by).
        self.trace_ids = [trace_id for trace_id, _, _ in spans]

    def __len__(self) -> int:
        return len(self._spans)

    def request(self, keep: Sequence[bool] | None = None) -> bytes:
        """``ExportTraceServiceRequest`` wire bytes for the spans ``keep`` marks (all, if ``None``)."""
        if keep is None or all(keep):
            if self._full is None:
                self._full = self._assemble(range(len(self._spans)))
            return self._full
        return self._assemble(i for i, chosen in enumerate(keep) if chosen)

    def _assemble(self, indices: Iterable[int]) -> bytes:
        spans, groups, headers = self._spans, self._groups, self._headers
        by_resource: dict[int, dict[int, list[bytes]]] = {}
        for i in indices:
            group = groups[i]
            by_group = by_resource.get(headers[group][0])
            if by_group is None:
                by_group = by_resource[headers[group][0]] = {}
            by_group.setdefault(group, []).append(spans[i])
        request: list[bytes] = []
        for resource, by_group in by_resource.items():
            encoded_resource, resource_schema = self._resources[resource]
            body = [encoded_resource]
            for group, encoded in by_group.items():
                _, head, tail = headers[group]
                body.append(_field(2, head + b"".join(encoded) + tail))
            if resource_schema:
                body.append(_text(3, resource_schema))
            request.append(_field(1, b"".join(body)))
        return b"".join(request)


def encode_batch(spans: Sequence[ReadableSpan]) -> EncodedBatch:
    """``spans`` encoded now, as one batch."""
    groups = SpanGroups()
    return EncodedBatch([groups.encode(span) for span in spans], groups)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """``ExportTraceServiceRequest`` wire bytes for ``spans``, grouped by resource and scope."""
    return encode_batch(spans).request()
