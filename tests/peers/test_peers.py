"""Prove the protocol peers against the real client libraries (OpenTelemetry OTLP/gRPC exporters, sentry-sdk)."""

from __future__ import annotations

import gzip
import json
import math
import socket
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
import sentry_sdk
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.peers.base import Peer
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.otlp_receiver import OtlpReceiver
from tests.peers.sentry_ingest import SentryIngest, parse_envelope
from tests.peers.tcp_peers import HungPeer, ResettingPeer

# --------------------------------------------------------------------------- OTLP/gRPC receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as peer:
        yield peer


def _tracer_provider(exporter: OTLPSpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "peer-test"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _finished_spans(*names: str) -> tuple[ReadableSpan, ...]:
    """Real SDK spans, captured in memory, to hand straight to an exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("peer-test")
    for name in names:
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def test_otlp_receiver_gets_nested_spans_with_attributes(receiver: OtlpReceiver) -> None:
    provider = _tracer_provider(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    tracer = provider.get_tracer("peer-test", "1.2.3")
    try:
        with tracer.start_as_current_span(
            "GET /items",
            kind=SpanKind.SERVER,
            attributes={"http.method": "GET", "retries": 3, "ratio": 0.5, "cached": True, "tags": ["a", "b"]},
        ) as parent:
            with tracer.start_as_current_span("db.query", attributes={"db.rows": 7}) as child:
                child.add_event("checkpoint", {"step": 1})
                child.set_status(Status(StatusCode.ERROR, "boom"))
            parent.set_attribute("http.status_code", 200)
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    spans = receiver.wait_for_spans(2)
    assert len(spans) == 2
    server, query = receiver.span("GET /items"), receiver.span("db.query")
    assert server.kind == "server"
    assert query.kind == "internal"
    assert server.parent_span_id is None
    assert query.parent_span_id == server.span_id
    assert query.trace_id == server.trace_id
    assert len(server.trace_id) == 32
    assert len(server.span_id) == 16
    assert server.attributes == {
        "http.method": "GET",
        "retries": 3,
        "ratio": 0.5,
        "cached": True,
        "tags": ["a", "b"],
        "http.status_code": 200,
    }
    assert query.attributes == {"db.rows": 7}
    assert query.status_code == "error"
    assert query.status_message == "boom"
    assert server.status_code == "unset"
    assert query.event_names() == ["checkpoint"]
    assert query.events[0].attributes == {"step": 1}
    assert server.resource_attributes["service.name"] == "peer-test"
    assert (server.scope_name, server.scope_version) == ("peer-test", "1.2.3")
    assert server.start_time_unix_nano <= query.start_time_unix_nano <= query.end_time_unix_nano
    assert receiver.requests_received >= 1
    assert all(r.signal == "traces" and r.accepted for r in receiver.requests())


def test_otlp_receiver_gets_histogram_and_counter(receiver: OtlpReceiver) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True), export_interval_millis=math.inf
    )
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "peer-test"}))
    meter = provider.get_meter("peer-test")
    try:
        latency = meter.create_histogram("http.server.duration", unit="ms")
        hits = meter.create_counter("hits")
        for value in (5.0, 15.0, 40.0):
            latency.record(value, {"route": "/items"})
        latency.record(1.0, {"route": "/health"})
        hits.add(2, {"route": "/items"})
        hits.add(3, {"route": "/items"})
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    points = receiver.wait_for_metric("http.server.duration")
    by_route = {p.attributes["route"]: p for p in points}
    assert set(by_route) == {"/items", "/health"}
    items = by_route["/items"]
    assert items.kind == "histogram"
    assert items.unit == "ms"
    assert (items.count, items.sum, items.min, items.max) == (3, 60.0, 5.0, 40.0)
    assert sum(items.bucket_counts) == 3
    assert len(items.bucket_counts) == len(items.explicit_bounds) + 1
    assert items.temporality == "cumulative"
    assert items.resource_attributes["service.name"] == "peer-test"
    assert (by_route["/health"].count, by_route["/health"].sum) == (1, 1.0)

    [counter] = receiver.metric_points("hits")
    assert counter.kind == "sum"
    assert counter.value == 5
    assert counter.is_monotonic is True
    assert counter.attributes == {"route": "/items"}
    assert {r.signal for r in receiver.requests()} == {"metrics"}


def test_otlp_receiver_error_status_fails_the_exporter(receiver: OtlpReceiver) -> None:
    spans = _finished_spans("doomed")

    # A non-retryable status (set at construction): one attempt, then FAILURE.
    with OtlpReceiver(error_code=grpc.StatusCode.PERMISSION_DENIED) as denying:
        exporter = OTLPSpanExporter(endpoint=denying.endpoint, insecure=True, timeout=5)
        try:
            assert exporter.export(spans) is SpanExportResult.FAILURE
        finally:
            exporter.shutdown()
        assert denying.requests_received == 1
        assert denying.requests_rejected == 1
        assert denying.requests()[0].status_code == grpc.StatusCode.PERMISSION_DENIED
        assert denying.spans() == []
        assert [s.name for s in denying.spans(include_rejected=True)] == ["doomed"]

    # UNAVAILABLE (set at runtime) is retried, using the RetryInfo delay we send, until the exporter gives up.
    receiver.fail_with(grpc.StatusCode.UNAVAILABLE, retry_delay=0.01)
    assert receiver.error_code == grpc.StatusCode.UNAVAILABLE
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
    try:
        assert exporter.export(spans) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert receiver.requests_received > 1
    assert receiver.requests_rejected == receiver.requests_received
    assert receiver.spans() == []

    # Back to OK: the same receiver now accepts.
    receiver.error_code = None
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s.name for s in receiver.spans()] == ["doomed"]


def test_otlp_receiver_transient_failure_then_recovery(receiver: OtlpReceiver) -> None:
    receiver.fail_with(grpc.StatusCode.UNAVAILABLE, times=2, retry_delay=0.01)
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
    try:
        assert exporter.export(_finished_spans("eventually")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [r.accepted for r in receiver.requests()] == [False, False, True]
    assert receiver.error_code is None
    assert [s.name for s in receiver.spans()] == ["eventually"]


def test_otlp_receiver_restarts_on_the_same_port(receiver: OtlpReceiver) -> None:
    port = receiver.port
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
    try:
        assert exporter.export(_finished_spans("before")) is SpanExportResult.SUCCESS
        receiver.stop()
        assert not receiver.running
        receiver.start()
        assert receiver.port == port
        assert exporter.export(_finished_spans("after")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s.name for s in receiver.wait_for_spans(2)] == ["before", "after"]


def test_otlp_receiver_wait_times_out_with_what_it_received(receiver: OtlpReceiver) -> None:
    with pytest.raises(TimeoutError, match="0 request"):
        receiver.wait_for_spans(1, timeout=0.2)
    assert receiver.wait_for(lambda: "ready", timeout=0.2) == "ready"


# --------------------------------------------------------------------------- Sentry ingest


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


@pytest.fixture
def sentry_client(ingest: SentryIngest) -> Iterator[sentry_sdk.Client]:
    """A real sentry-sdk client (HTTP transport) used only through a local scope: no global ``init``."""
    client = sentry_sdk.Client(
        dsn=ingest.dsn,
        default_integrations=False,
        send_client_reports=False,
        enable_backpressure_handling=False,
        traces_sample_rate=1.0,
        release="peer-test@1",
    )
    try:
        yield client
    finally:
        client.close(timeout=0)


def _capture_error(client: sentry_sdk.Client, message: str) -> str | None:
    with sentry_sdk.new_scope() as scope:
        scope.set_client(client)
        try:
            raise ValueError(message)
        except ValueError as exc:
            return scope.capture_exception(exc)


def test_sentry_ingest_receives_one_error_event(ingest: SentryIngest, sentry_client: sentry_sdk.Client) -> None:
    event_id = _capture_error(sentry_client, "kaboom 123")
    assert event_id is not None
    sentry_client.flush(timeout=5)

    [event] = ingest.wait_for_events(1)
    assert ingest.events() == [event]
    assert ingest.transactions() == []
    assert event["event_id"] == event_id
    assert event["release"] == "peer-test@1"
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["value"] == "kaboom 123"

    [request] = ingest.requests()
    assert request.accepted
    assert not request.flagged
    assert request.status == 200
    assert request.path == "/api/42/envelope/"
    assert request.content_encoding == "gzip"
    assert request.wire_body != request.raw_body
    assert gzip.decompress(request.wire_body) == request.raw_body
    assert "sentry_key=publickey" in request.headers["x-sentry-auth"]
    assert request.envelope is not None
    assert request.envelope.event_id == event_id
    assert request.envelope.item_types() == ["event"]
    assert b"kaboom 123" in request.raw_body
    assert not any(b"never-sent-secret" in body for body in ingest.raw_bodies())


def test_sentry_ingest_keeps_transactions_apart(ingest: SentryIngest, sentry_client: sentry_sdk.Client) -> None:
    with sentry_sdk.new_scope() as scope:
        scope.set_client(sentry_client)
        with (
            sentry_sdk.start_transaction(name="GET /items", op="http.server") as transaction,
            transaction.start_child(op="db", name="select"),
        ):
            pass
    sentry_client.flush(timeout=5)

    [tx] = ingest.wait_for_transactions(1)
    assert tx["type"] == "transaction"
    assert tx["transaction"] == "GET /items"
    assert [span["op"] for span in tx["spans"]] == ["db"]
    assert ingest.events() == []


def test_sentry_ingest_status_500_is_counted_and_flagged(
    ingest: SentryIngest, sentry_client: sentry_sdk.Client
) -> None:
    ingest.status = 500
    _capture_error(sentry_client, "lost to a 500")
    sentry_client.flush(timeout=5)

    [request] = ingest.wait_for_requests(1)
    assert request.status == 500
    assert request.flagged
    assert not request.accepted
    assert ingest.requests_flagged == 1
    assert ingest.events() == []
    [rejected] = ingest.events(include_rejected=True)
    assert rejected["exception"]["values"][0]["value"] == "lost to a 500"

    ingest.status = 200
    _capture_error(sentry_client, "after recovery")
    sentry_client.flush(timeout=5)
    [event] = ingest.wait_for_events(1)
    assert event["exception"]["values"][0]["value"] == "after recovery"


def test_sentry_ingest_429_retry_after_is_honoured_by_the_sdk(
    ingest: SentryIngest, sentry_client: sentry_sdk.Client
) -> None:
    ingest.status = 429
    ingest.retry_after = 60
    _capture_error(sentry_client, "rate limited")
    sentry_client.flush(timeout=5)
    [request] = ingest.wait_for_requests(1)
    assert (request.status, request.flagged) == (429, True)

    # The SDK now backs off for Retry-After seconds: the next error never reaches the wire.
    ingest.status = 200
    _capture_error(sentry_client, "dropped by the client")
    sentry_client.flush(timeout=5)
    assert ingest.requests_received == 1
    assert ingest.events() == []


def test_sentry_ingest_delay_slow_sentry(ingest: SentryIngest, sentry_client: sentry_sdk.Client) -> None:
    ingest.delay = 5.0
    _capture_error(sentry_client, "slow sentry")
    sentry_client.flush(timeout=0.3)  # returns although the ingest has not answered yet

    [request] = ingest.wait_for_requests(1)
    assert request.delay == 5.0
    assert request.flagged
    assert request.accepted  # a slow Sentry still stores it
    assert ingest.events()[0]["exception"]["values"][0]["value"] == "slow sentry"
    ingest.stop()  # cuts the pending delay short


def _envelope(*parts: bytes) -> bytes:
    return b"\n".join(parts) + b"\n"


def test_sentry_ingest_parses_lengths_newlines_and_rejects_bad_requests(ingest: SentryIngest) -> None:
    attachment = b"line one\nline two\n"
    body = _envelope(
        json.dumps({"event_id": "a" * 32}).encode(),
        json.dumps({"type": "attachment", "length": len(attachment), "filename": "f.txt"}).encode(),
        attachment,
        b'{"type":"event"}',  # no length: the payload runs to the next newline
        b'{"message":"hi","level":"info"}',
    )
    auth = {"X-Sentry-Auth": "Sentry sentry_key=publickey, sentry_version=7"}
    with httpx.Client(base_url=ingest.url, timeout=10) as http:
        ok = http.post("/api/42/envelope/", content=gzip.compress(body), headers={**auth, "Content-Encoding": "gzip"})
        plain = http.post("/api/42/envelope/?sentry_key=publickey", content=body)
        wrong_key = http.post("/api/42/envelope/", content=body, headers={"X-Sentry-Auth": "Sentry sentry_key=nope"})
        wrong_project = http.post("/api/7/envelope/", content=body, headers=auth)
        garbage = http.post("/api/42/envelope/", content=b"not json\n", headers=auth)
        ingest.status = 429
        limited = http.post("/api/42/envelope/", content=body, headers=auth)

    assert (ok.status_code, ok.json()) == (200, {"id": "a" * 32})
    assert plain.status_code == 200
    assert (wrong_key.status_code, wrong_project.status_code, garbage.status_code) == (401, 404, 400)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "60")

    envelope = parse_envelope(body)
    assert ingest.envelopes() == [envelope, envelope]
    attachment_item, event_item = envelope.items
    assert (attachment_item.type, attachment_item.payload, attachment_item.json) == ("attachment", attachment, None)
    assert event_item.json == {"message": "hi", "level": "info"}
    assert ingest.events() == [{"message": "hi", "level": "info"}] * 2
    assert ingest.requests_received == 6
    assert ingest.requests_flagged == 4
    assert ingest.raw_bodies() == [body, body, body, body, b"not json\n", body]
    assert [r.accepted for r in ingest.requests()] == [True, True, False, False, False, False]


def test_sentry_ingest_restarts_on_the_same_port(ingest: SentryIngest, sentry_client: sentry_sdk.Client) -> None:
    port = ingest.port
    _capture_error(sentry_client, "before restart")
    sentry_client.flush(timeout=5)
    ingest.wait_for_events(1)
    ingest.stop()
    assert not ingest.running
    ingest.start()
    assert ingest.port == port
    _capture_error(sentry_client, "after restart")
    sentry_client.flush(timeout=5)
    events = ingest.wait_for_events(2)
    assert [e["exception"]["values"][0]["value"] for e in events] == ["before restart", "after restart"]


def test_sentry_ingest_wait_times_out_with_what_it_received(ingest: SentryIngest) -> None:
    with pytest.raises(TimeoutError, match="0 request"):
        ingest.wait_for_events(1, timeout=0.2)
    ingest.clear()
    assert ingest.requests() == []


def listening(port: int) -> bool:
    """Whether something accepts connections on the port (a reset right after accepting counts)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize("make", [OtlpReceiver, OtlpHttpReceiver, SentryIngest, HungPeer, ResettingPeer])
def test_every_peer_restarts_on_the_same_port_and_refuses_while_stopped(make: Callable[[], Peer]) -> None:
    peer = make()
    with pytest.raises(RuntimeError, match="has not been started"):
        _ = peer.port
    with peer:
        port = peer.port
        assert peer.running
        assert listening(port)
        with pytest.raises(RuntimeError, match="already started"):
            peer.start()
        peer.stop()
        assert not peer.running
        assert not listening(port)
        peer.restart()
        assert (peer.port, peer.running) == (port, True)
        assert peer.endpoint == f"http://127.0.0.1:{port}"
        assert listening(port)
    assert not peer.running
    peer.stop()  # twice is fine
