"""The fast OTLP span encoder produces exactly what the SDK's encoder produces, for a batch and any subset."""

from __future__ import annotations

import itertools

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from litestar_omnii_obs._internal.otlp.encoding import encode_batch, encode_spans


def finished_spans() -> tuple[ReadableSpan, ...]:
    exporter = InMemorySpanExporter()
    providers = [
        TracerProvider(resource=Resource.create({"service.name": "a", "n": 1, "f": 1.5, "ok": True})),
        TracerProvider(resource=Resource({"service.name": "b"}, schema_url="https://x/schema")),
    ]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    tracer = providers[0].get_tracer("scope-one", "1.2.3")
    with tracer.start_as_current_span(
        "GET /users/{user_id}",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "server.port": 8000,
            "negative": -42,
            "big": 2**62,
            "ratio": 0.25,
            "flag": False,
            "empty": "",
            "unicode": "héllo ✓",
            "tags": ("a", "b"),
            "numbers": [1, 2, 3],
        },
        links=[Link(remote, {"link.attr": "x"})],
    ) as server:
        server.add_event("checkpoint", {"step": 2})
        with tracer.start_as_current_span("child") as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.record_exception(ValueError("bad value"))
        server.set_status(Status(StatusCode.OK))
    other = providers[1].get_tracer("scope-two", schema_url="https://x/scope")
    with other.start_as_current_span("lonely", kind=SpanKind.CLIENT):
        pass
    with providers[0].get_tracer("scope-three").start_as_current_span("internal"):
        pass
    return exporter.get_finished_spans()


def test_fast_encoder_matches_the_sdk_encoder_field_for_field() -> None:
    spans = finished_spans()
    assert len(spans) == 4
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == sdk_encode(spans)


def test_empty_batch_encodes_to_an_empty_request() -> None:
    assert ExportTraceServiceRequest.FromString(encode_spans([])) == sdk_encode([])


def test_every_subset_of_a_batch_matches_the_sdk_encoder_on_that_subset() -> None:
    spans = finished_spans()
    batch = encode_batch(spans)
    assert batch.trace_ids == [span.context.trace_id for span in spans]
    for keep in itertools.product((False, True), repeat=len(spans)):
        subset = [span for span, chosen in zip(spans, keep, strict=True) if chosen]
        assert ExportTraceServiceRequest.FromString(batch.request(keep)) == sdk_encode(subset), keep


def test_a_target_taking_every_span_reuses_the_whole_request() -> None:
    spans = finished_spans()
    batch = encode_batch(spans)
    whole = batch.request()
    assert batch.request([True] * len(batch)) is whole
    assert batch.request(None) is whole
    assert ExportTraceServiceRequest.FromString(whole) == sdk_encode(spans)
    assert whole == encode_spans(spans)


def test_attribute_values_that_compare_equal_keep_their_own_encoding() -> None:
    """(1,) == (1.0,), True == 1 and 0.0 == -0.0, but each has its own bytes on the wire."""
    provider = TracerProvider()
    spans = []
    for value in [(1,), (1.0,), True, 1, 0.0, -0.0, [2], [2.0]]:
        span = provider.get_tracer("t").start_span("s", attributes={"k": value})
        span.end()
        spans.append(span)
    assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == sdk_encode(spans)
