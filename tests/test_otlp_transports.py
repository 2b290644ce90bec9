"""OTLP transports against real peers on 127.0.0.1: a gRPC collector, an HTTP collector, Sentry's OTLP endpoint.

Spans are made by a real SDK ``TracerProvider``; what arrives is decoded by the peers with
opentelemetry-proto. Failure tests drive the peers (stopped, slow, 429, 5xx, rate limits) and
check what the application sees: one warning per outage, one note on recovery, nothing sent
while backing off, dropped spans counted, credentials never logged.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from email.utils import formatdate

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from sentry_sdk.consts import VERSION as SENTRY_SDK_VERSION
from sentry_sdk.consts import EndpointType
from sentry_sdk.utils import Dsn

from litestar_omnii_obs._internal.health import parse_retry_after, sentry_rate_limit
from litestar_omnii_obs._internal.otlp import CollectorTarget, FanOutSpanExporter, SentryTarget, signal_url
from litestar_omnii_obs._internal.otlp.metrics import OtlpMetricExporter, build_metric_exporter
from litestar_omnii_obs._internal.otlp.transports import GRPC_EXTRA_HINT, partial_success, retry_delay
from tests.conftest import free_port, wait_until
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.otlp_receiver import OtlpReceiver
from tests.peers.sentry_ingest import SentryIngest

FAST = {"probe_interval": 0.05, "max_backoff": 0.2}  # quick recovery in tests
SLOW = {"probe_interval": 30.0, "max_backoff": 60.0}  # a probe interval that outlasts the test


# --------------------------------------------------------------------------- helpers


def make_spans(traces: int = 1, children: int = 1, sampler: TraceIdRatioBased | None = None) -> list[ReadableSpan]:
    """Finished SDK spans: ``traces`` roots, each with ``children`` child spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "transport-test"}), sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("transport-test", "1.0")
    for i in range(traces):
        with tracer.start_as_current_span(f"root-{i}"):
            for j in range(children):
                with tracer.start_as_current_span(f"child-{i}-{j}"):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def export_via_sdk(exporter: FanOutSpanExporter, traces: int, children: int = 1, **bsp: int) -> list[str]:
    """Make traces with a real TracerProvider + BatchSpanProcessor around ``exporter``; their trace ids."""
    provider = TracerProvider(resource=Resource.create({"service.name": "transport-test"}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, **bsp))
    tracer = provider.get_tracer("transport-test")
    ids = []
    for i in range(traces):
        with tracer.start_as_current_span(f"root-{i}") as root:
            ids.append(f"{root.get_span_context().trace_id:032x}")
            for j in range(children):
                with tracer.start_as_current_span(f"child-{i}-{j}"):
                    pass
    assert provider.force_flush(30_000)
    provider.shutdown()
    return ids


def outage_records(records: Sequence[logging.LogRecord]) -> tuple[list[str], list[str]]:
    """(failure warnings, recovery notes) the package logged."""
    messages = [r.getMessage() for r in records if r.name == "litestar_omnii_obs"]
    return [m for m in messages if "is failing" in m], [m for m in messages if "recovered" in m]


def assert_tree(spans: Sequence[object], traces: int, children: int) -> None:
    by_trace: dict[str, list[object]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)  # type: ignore[attr-defined]
    assert len(by_trace) == traces
    for members in by_trace.values():
        roots = [s for s in members if s.parent_span_id is None]  # type: ignore[attr-defined]
        assert len(roots) == 1
        assert len(members) == children + 1
        for child in members:
            if child is not roots[0]:
                assert child.parent_span_id == roots[0].span_id  # type: ignore[attr-defined]


@pytest.fixture
def grpc_collector() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as peer:
        yield peer


@pytest.fixture
def http_collector() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


# --------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_grpc_collector_receives_spans_with_their_ids_and_parents(
    grpc_collector: OtlpReceiver, compression: str
) -> None:
    target = CollectorTarget(
        grpc_collector.endpoint,
        protocol="grpc",
        headers={"X-Api-Key": "k1"},
        timeout=5.0,
        compression=compression,  # type: ignore[arg-type]
    )
    ids = export_via_sdk(FanOutSpanExporter([target]), traces=5, children=2)
    spans = grpc_collector.wait_for_spans(15)
    assert_tree(spans, traces=5, children=2)
    assert {s.trace_id for s in spans} == set(ids)
    assert all(s.resource_attributes["service.name"] == "transport-test" for s in spans)
    assert all(r.metadata.get("x-api-key") == "k1" for r in grpc_collector.requests())


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_http_collector_receives_spans_at_v1_traces(http_collector: OtlpHttpReceiver, compression: str) -> None:
    target = CollectorTarget(
        http_collector.endpoint,
        protocol="http/protobuf",
        headers={"X-Api-Key": "k2"},
        compression=compression,  # type: ignore[arg-type]
    )
    ids = export_via_sdk(FanOutSpanExporter([target]), traces=4, children=3)
    spans = http_collector.wait_for_spans(16)
    assert_tree(spans, traces=4, children=3)
    assert {s.trace_id for s in spans} == set(ids)
    encoding = None if compression == "none" else "gzip"  # none: the OTLP exporters' default
    for request in http_collector.requests():
        assert (request.path, request.content_encoding, request.status) == ("/v1/traces", encoding, 200)
        assert request.headers["content-type"] == "application/x-protobuf"
        assert request.headers["x-api-key"] == "k2"


def test_a_signal_specific_http_endpoint_is_used_as_is(http_collector: OtlpHttpReceiver) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    target = CollectorTarget(dead, traces_endpoint=http_collector.traces_url, protocol="http/protobuf")
    assert FanOutSpanExporter([target]).export(make_spans()) is SpanExportResult.SUCCESS
    assert len(http_collector.wait_for_spans(2)) == 2


def test_otlp_endpoint_rules() -> None:
    assert signal_url("http://c:4318", None, "traces") == "http://c:4318/v1/traces"
    assert signal_url("http://c:4318/", None, "traces") == "http://c:4318/v1/traces"
    assert signal_url("https://c/base/", None, "metrics") == "https://c/base/v1/metrics"
    assert signal_url("http://c:4318", "http://d/custom", "traces") == "http://d/custom"
    with pytest.raises(ValueError, match="no OTLP endpoint"):
        signal_url(None, None, "traces")
    with pytest.raises(ValueError, match="protocol"):
        CollectorTarget("http://c:4318", protocol="http/json")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Sentry


def test_sentry_gets_the_traces_under_its_rate_whole_and_a_subset_of_the_collectors(
    grpc_collector: OtlpReceiver, ingest: SentryIngest
) -> None:
    collector_rate, sentry_rate, traces = 0.5, 0.25, 400
    sentry = SentryTarget.from_dsn(ingest.dsn, rate=sentry_rate, timeout=5.0)
    exporter = FanOutSpanExporter([CollectorTarget(grpc_collector.endpoint, protocol="grpc"), sentry])
    spans = make_spans(traces=traces, children=2, sampler=TraceIdRatioBased(collector_rate))
    for start in range(0, len(spans), 128):  # batches, as a BatchSpanProcessor hands them over
        assert exporter.export(spans[start : start + 128]) is SpanExportResult.SUCCESS

    collected = grpc_collector.wait_for_spans(len(spans))
    sentry_spans = ingest.otlp_spans()
    collector_traces = {s.trace_id for s in collected}
    sentry_traces = {s.trace_id for s in sentry_spans}
    assert sentry_traces <= collector_traces
    assert 0.15 * traces <= len(sentry_traces) <= 0.35 * traces
    # Exactly the traces OpenTelemetry's own ratio sampler would keep at that rate...
    sampler = TraceIdRatioBased(sentry_rate)
    expected = {
        f"{s.context.trace_id:032x}"
        for s in spans
        if sampler.should_sample(None, s.context.trace_id, "x").decision is Decision.RECORD_AND_SAMPLE
    }
    assert sentry_traces == expected
    # ...each one whole.
    assert_tree(sentry_spans, traces=len(sentry_traces), children=2)

    dsn_auth = Dsn(ingest.dsn).to_auth(f"sentry.python/{SENTRY_SDK_VERSION}")
    for request in ingest.otlp_requests():
        assert request.path == f"/api/{ingest.project_id}/integration/otlp/v1/traces/"
        assert request.sentry_key == ingest.public_key
        assert request.headers["x-sentry-auth"] == dsn_auth.to_header()
        assert request.content_encoding == "gzip"
        assert request.accepted
    assert sentry.name == dsn_auth.get_api_url(EndpointType.OTLP_TRACES) == ingest.otlp_traces_url


@pytest.mark.parametrize(("rate", "expect_all"), [(0.0, False), (1.0, True)])
def test_sentry_rate_zero_sends_nothing_and_one_sends_everything(
    grpc_collector: OtlpReceiver, ingest: SentryIngest, rate: float, expect_all: bool
) -> None:
    exporter = FanOutSpanExporter(
        [CollectorTarget(grpc_collector.endpoint, protocol="grpc"), SentryTarget.from_dsn(ingest.dsn, rate=rate)]
    )
    spans = make_spans(traces=20)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(grpc_collector.wait_for_spans(40)) == 40
    if expect_all:
        assert len(ingest.wait_for_otlp_spans(40)) == 40
    else:
        assert ingest.requests_received == 0


def test_a_failing_sentry_does_not_make_the_collector_look_failed(
    grpc_collector: OtlpReceiver, ingest: SentryIngest, obs_log: list[logging.LogRecord]
) -> None:
    ingest.status = 500
    sentry = SentryTarget.from_dsn(ingest.dsn, rate=1.0, **SLOW)
    exporter = FanOutSpanExporter([CollectorTarget(grpc_collector.endpoint, protocol="grpc"), sentry])
    for _ in range(3):
        assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert len(grpc_collector.wait_for_spans(6)) == 6
    assert ingest.requests_received == 1  # then down: kept, not sent, until the next probe
    failing, _ = outage_records(obs_log)
    assert len(failing) == 1
    assert "HTTP 500" in failing[0]
    assert exporter.dropped() == {grpc_collector.endpoint: 0, sentry.name: 0}
    assert sentry.transport.kept == 6
    exporter.shutdown()  # what Sentry never got is counted, by reason
    assert sentry.health.lost() == {"still queued at shutdown": 6}


# --------------------------------------------------------------------------- outages


def test_dead_grpc_collector_warns_once_then_recovers_once(obs_log: list[logging.LogRecord]) -> None:
    port = free_port()
    target = CollectorTarget(f"http://127.0.0.1:{port}", protocol="grpc", timeout=2.0, **FAST)
    exporter = FanOutSpanExporter([target])
    made = 0
    for _ in range(5):
        assert exporter.export(make_spans()) is SpanExportResult.FAILURE  # returns: no wait on the dead peer
        made += 2
    assert (target.health.dropped, target.transport.kept) == (0, 10)  # kept for the collector's return
    failing, recovered = outage_records(obs_log)
    assert len(failing) == 1
    assert recovered == []

    def export_counted() -> bool:
        nonlocal made
        made += 2
        return exporter.export(make_spans()) is SpanExportResult.SUCCESS

    with OtlpReceiver(port=port) as collector:
        assert wait_until(export_counted)
        for _ in range(3):
            assert export_counted()
        assert len(collector.wait_for_spans(made)) == made  # nothing made during the outage was lost
    assert target.health.dropped == 0
    failing, recovered = outage_records(obs_log)
    assert len(failing) == 1
    assert len(recovered) == 1
    exporter.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_a_collector_refuses_are_counted_and_logged_once(
    grpc_collector: OtlpReceiver, http_collector: OtlpHttpReceiver, protocol: str, obs_log: list[logging.LogRecord]
) -> None:
    # OTLP partial success: the request is accepted (no back-off, no outage) but some spans are not kept.
    collector = grpc_collector if protocol == "grpc" else http_collector
    collector.refusal = "attribute value too long"
    target = CollectorTarget(collector.endpoint, protocol=protocol, **FAST)  # type: ignore[arg-type]
    exporter = FanOutSpanExporter([target])
    for _ in range(3):
        assert exporter.export(make_spans(children=2)) is SpanExportResult.SUCCESS
    assert target.health.dropped == 9
    assert not target.health.failing
    messages = [r.getMessage() for r in obs_log if r.name == "litestar_omnii_obs"]
    assert len(messages) == 1
    assert "refused 3 span(s)" in messages[0]
    assert "attribute value too long" in messages[0]
    collector.refusal = None
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert target.health.dropped == 9
    exporter.shutdown()


def test_grpc_collector_restart_is_reached_again(
    grpc_collector: OtlpReceiver, obs_log: list[logging.LogRecord]
) -> None:
    exporter = FanOutSpanExporter([CollectorTarget(grpc_collector.endpoint, protocol="grpc", timeout=2.0, **FAST)])
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    grpc_collector.stop()
    assert wait_until(lambda: exporter.export(make_spans()) is SpanExportResult.FAILURE)
    grpc_collector.start()
    assert wait_until(lambda: exporter.export(make_spans()) is SpanExportResult.SUCCESS)
    failing, recovered = outage_records(obs_log)
    assert (len(failing), len(recovered)) == (1, 1)


def test_dead_http_collector_warns_once_then_recovers_once(obs_log: list[logging.LogRecord]) -> None:
    port = free_port()
    target = CollectorTarget(f"http://127.0.0.1:{port}", protocol="http/protobuf", timeout=2.0, **FAST)
    exporter = FanOutSpanExporter([target])
    for _ in range(5):
        assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    failing, _ = outage_records(obs_log)
    assert len(failing) == 1
    assert "connection refused" in failing[0]

    receiver = OtlpHttpReceiver(port=port).start()
    try:
        assert wait_until(lambda: exporter.export(make_spans()) is SpanExportResult.SUCCESS)
        receiver.stop()  # and a restart of a collector that was up
        assert wait_until(lambda: exporter.export(make_spans()) is SpanExportResult.FAILURE)
        receiver.start()
        assert wait_until(lambda: exporter.export(make_spans()) is SpanExportResult.SUCCESS)
    finally:
        receiver.stop()
    failing, recovered = outage_records(obs_log)
    assert (len(failing), len(recovered)) == (2, 2)


def test_slow_http_collector_times_out_and_is_backed_off(obs_log: list[logging.LogRecord]) -> None:
    with OtlpHttpReceiver(delay=5.0) as slow:
        target = CollectorTarget(slow.endpoint, protocol="http/protobuf", timeout=0.3, **SLOW)
        exporter = FanOutSpanExporter([target])
        assert exporter.export(make_spans()) is SpanExportResult.FAILURE
        for _ in range(5):
            assert exporter.export(make_spans()) is SpanExportResult.FAILURE
        assert slow.requests_received == 1  # the rest were dropped while backing off, not sent
        exporter.shutdown()
    failing, _ = outage_records(obs_log)
    assert len(failing) == 1
    assert "timed out" in failing[0]
    assert target.health.dropped == 12


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_5xx_backs_off_and_recovers(http_collector: OtlpHttpReceiver, status: int) -> None:
    target = CollectorTarget(http_collector.endpoint, protocol="http/protobuf", **FAST)
    exporter = FanOutSpanExporter([target])
    http_collector.fail_with(status, times=1)
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert not target.health.ready()
    made = 2

    def export_counted() -> bool:
        nonlocal made
        made += 2
        return exporter.export(make_spans()) is SpanExportResult.SUCCESS

    assert wait_until(export_counted)
    statuses = [r.status for r in http_collector.requests()]
    assert statuses[0] == status
    assert set(statuses[1:]) == {200}
    assert len(http_collector.spans()) == made  # the failed request's spans were kept and sent


# Waits out a real peer's timing (seconds): a slow real-server test, run by `make test`, not `make test-fast`.
@pytest.mark.reliability
@pytest.mark.parametrize("retry_after", ["2", "http-date"])
def test_http_429_retry_after_stops_sending_for_the_window(
    http_collector: OtlpHttpReceiver, obs_log: list[logging.LogRecord], retry_after: str
) -> None:
    header = formatdate(time.time() + 3, usegmt=True) if retry_after == "http-date" else retry_after
    target = CollectorTarget(http_collector.endpoint, protocol="http/protobuf", **FAST)
    exporter = FanOutSpanExporter([target])
    http_collector.fail_with(429, times=1, retry_after=header)
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert target.health.pause_remaining() > 0.5  # the server's window, not our 0.05 s back-off
    for _ in range(5):
        assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert http_collector.requests_received == 1
    assert wait_until(target.health.ready, timeout=15)
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    failing, recovered = outage_records(obs_log)
    assert len(failing) == 1
    assert "HTTP 429" in failing[0]
    assert "retry after" in failing[0]
    assert len(recovered) == 1
    assert "0 span(s) lost" in recovered[0]  # OTLP says 429 is retryable: the 12 spans were kept
    assert len(http_collector.spans()) == 14


# Waits out a real peer's timing (seconds): a slow real-server test, run by `make test`, not `make test-fast`.
@pytest.mark.reliability
def test_grpc_resource_exhausted_retry_info_is_honoured(grpc_collector: OtlpReceiver) -> None:
    target = CollectorTarget(grpc_collector.endpoint, protocol="grpc", **FAST)
    exporter = FanOutSpanExporter([target])
    grpc_collector.fail_with(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1, retry_delay=2.0)
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert target.health.pause_remaining() > 0.5
    exporter.export(make_spans())
    assert grpc_collector.requests_received == 1
    assert wait_until(lambda: exporter.export(make_spans()) is SpanExportResult.SUCCESS, timeout=15)


# Waits out a real peer's timing (seconds): a slow real-server test, run by `make test`, not `make test-fast`.
@pytest.mark.reliability
def test_sentry_rate_limits_header_stops_spans_for_its_window(
    grpc_collector: OtlpReceiver, ingest: SentryIngest, obs_log: list[logging.LogRecord]
) -> None:
    ingest.status, ingest.retry_after, ingest.rate_limits = 429, None, "2:span;transaction:organization:quota"
    sentry = SentryTarget.from_dsn(ingest.dsn, rate=1.0, **FAST)
    exporter = FanOutSpanExporter([CollectorTarget(grpc_collector.endpoint, protocol="grpc"), sentry])
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS  # the collector decides
    assert sentry.health.pause_remaining() > 0.5
    for _ in range(4):
        exporter.export(make_spans())
    assert ingest.requests_received == 1
    assert len(grpc_collector.wait_for_spans(10)) == 10

    ingest.status, ingest.rate_limits = 200, None
    assert wait_until(lambda: bool(exporter.export(make_spans())) and ingest.otlp_spans() != [], timeout=15)
    failing, recovered = outage_records(obs_log)
    assert len(failing) == 1
    assert len(recovered) == 1


def test_sentry_rate_limit_on_an_accepted_request_pauses_what_follows(ingest: SentryIngest) -> None:
    ingest.rate_limits = "30::organization"  # empty categories: everything
    sentry = SentryTarget.from_dsn(ingest.dsn, rate=1.0, **FAST)
    exporter = FanOutSpanExporter([sentry])
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert ingest.requests_received == 1


def test_sentry_rate_limits_for_other_categories_are_ignored(ingest: SentryIngest) -> None:
    ingest.rate_limits = "60:error;attachment:organization, 60:log_item:project"
    exporter = FanOutSpanExporter([SentryTarget.from_dsn(ingest.dsn, rate=1.0)])
    for _ in range(3):
        assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert len(ingest.otlp_spans()) == 6


def test_retry_after_and_rate_limit_parsing() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now=lambda: now) == pytest.approx(10.0)
    assert parse_retry_after(formatdate(now - 10, usegmt=True), now=lambda: now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None

    assert sentry_rate_limit("60::organization") == 60.0
    assert sentry_rate_limit("60:span:organization") == 60.0
    assert sentry_rate_limit("60:transaction;error:key") == 60.0
    assert sentry_rate_limit("60:error;attachment:organization") is None
    assert sentry_rate_limit("10:span:org, 30:transaction:org, 90:error:org") == 30.0
    assert sentry_rate_limit("x:span:org, 5:span:org:reason:ns") == 5.0
    assert sentry_rate_limit("garbage") is None
    assert sentry_rate_limit(None) is None


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_credential_in_the_endpoint_never_reaches_a_log_record(
    protocol: str, caplog: pytest.LogCaptureFixture, obs_log: list[logging.LogRecord]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, urllib3's, grpc's, the SDK's
    url = f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}"
    target = CollectorTarget(url, protocol=protocol, timeout=1.0, **FAST)  # type: ignore[arg-type]
    exporter = FanOutSpanExporter([target])
    for _ in range(3):
        exporter.export(make_spans())
    exporter.shutdown()
    failing, _ = outage_records(obs_log)
    assert len(failing) == 1
    assert "***@127.0.0.1" in failing[0]
    for record in [*caplog.records, *obs_log]:
        assert "s3cr3t" not in record.getMessage()
        assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in target.name
    assert "s3cr3t" not in repr(exporter.dropped())


def test_endpoint_credentials_are_sent_as_basic_authorization(http_collector: OtlpHttpReceiver) -> None:
    url = f"http://alice:s3cr3t@127.0.0.1:{http_collector.port}"
    exporter = FanOutSpanExporter([CollectorTarget(url, protocol="http/protobuf")])
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert http_collector.requests()[0].headers["authorization"] == "Basic YWxpY2U6czNjcjN0"


def test_grpc_endpoint_credentials_are_sent_as_basic_authorization(grpc_collector: OtlpReceiver) -> None:
    url = f"http://alice:s3cr3t@127.0.0.1:{grpc_collector.port}"
    target = CollectorTarget(url, protocol="grpc")
    assert target.name == f"http://***@127.0.0.1:{grpc_collector.port}"
    assert FanOutSpanExporter([target]).export(make_spans()) is SpanExportResult.SUCCESS
    assert grpc_collector.requests()[0].metadata["authorization"] == "Basic YWxpY2U6czNjcjN0"


# --------------------------------------------------------------------------- lifecycle


def test_shutdown_closes_and_later_exports_fail_without_sending(grpc_collector: OtlpReceiver) -> None:
    exporter = FanOutSpanExporter([CollectorTarget(grpc_collector.endpoint, protocol="grpc")])
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    exporter.shutdown()
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert grpc_collector.requests_received == 1


def test_provider_shutdown_with_a_dead_collector_returns() -> None:
    exporter = FanOutSpanExporter([CollectorTarget(f"http://127.0.0.1:{free_port()}", timeout=1.0)])
    export_via_sdk(exporter, traces=3)  # force_flush + shutdown return although nothing was delivered
    assert exporter.dropped() != {}


# --------------------------------------------------------------------------- metrics


def _export_one_metric(exporter: object) -> None:
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)  # type: ignore[arg-type]
    provider = MeterProvider(resource=Resource.create({"service.name": "metric-test"}), metric_readers=[reader])
    provider.get_meter("metric-test").create_counter("omnii.test.count").add(3, {"k": "v"})
    provider.force_flush()
    provider.shutdown()


def test_metric_exporter_over_grpc(grpc_collector: OtlpReceiver) -> None:
    url = f"http://alice:s3cr3t@127.0.0.1:{grpc_collector.port}"
    exporter = build_metric_exporter(url, "grpc", {"X-Api-Key": "m1"}, 5.0)
    _export_one_metric(exporter)
    point = grpc_collector.wait_for_metric("omnii.test.count")[0]
    assert (point.value, point.attributes) == (3, {"k": "v"})
    metadata = grpc_collector.requests()[-1].metadata
    assert (metadata["x-api-key"], metadata["authorization"]) == ("m1", "Basic YWxpY2U6czNjcjN0")


def test_metric_exporter_over_http(http_collector: OtlpHttpReceiver) -> None:
    exporter = build_metric_exporter(http_collector.endpoint, "http/protobuf", {"X-Api-Key": "m2"}, 5.0)
    _export_one_metric(exporter)
    point = http_collector.wait_for_metric("omnii.test.count")[0]
    assert point.value == 3
    request = http_collector.requests()[-1]
    assert (request.path, request.content_encoding, request.headers["x-api-key"]) == ("/v1/metrics", None, "m2")


def test_metric_exporter_uses_a_signal_specific_endpoint_as_is(http_collector: OtlpHttpReceiver) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    exporter = build_metric_exporter(dead, "http/protobuf", None, 5.0, metrics_endpoint=http_collector.metrics_url)
    _export_one_metric(exporter)
    assert http_collector.wait_for_metric("omnii.test.count")


def test_grpc_without_grpcio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)  # as in an install without the grpc extra
    monkeypatch.delitem(sys.modules, "litestar_omnii_obs._internal.otlp.grpc_transport", raising=False)
    with pytest.raises(ImportError, match=r"litestar-omnii-obs\[grpc\]") as info:
        build_metric_exporter("http://127.0.0.1:4317", "grpc", None, 5.0)
    assert GRPC_EXTRA_HINT in str(info.value)
    with pytest.raises(ImportError, match=r"litestar-omnii-obs\[grpc\]"):
        CollectorTarget("http://127.0.0.1:4317", protocol="grpc")


# --------------------------------------------------------------------------- answers, read without protobuf


def test_partial_success_and_retry_info_are_read_as_protobuf_writes_them() -> None:
    from google.protobuf.duration_pb2 import Duration
    from google.rpc.error_details_pb2 import RetryInfo
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsPartialSuccess,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    traces = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=300, error_message="too old: é")
    )
    metrics = ExportMetricsServiceResponse(partial_success=ExportMetricsPartialSuccess(rejected_data_points=2))
    assert partial_success(traces.SerializeToString()) == (300, "too old: é")
    assert partial_success(metrics.SerializeToString()) == (2, "")
    assert partial_success(ExportTraceServiceResponse().SerializeToString()) == (0, "")
    assert partial_success(b"<html>502 Bad Gateway</html>") == (0, "")  # a proxy's page: nothing learnt
    assert partial_success(b"\x0a\x05\x08") == (0, "")  # truncated
    info = RetryInfo(retry_delay=Duration(seconds=3, nanos=500_000_000)).SerializeToString()
    assert retry_delay(info) == 3.5
    assert retry_delay(b"") is None
    assert retry_delay(b"\xff") is None
    # int64 fields: a negative value is not read as 2**64 - 1 (a peer never tried again, all counted lost).
    negative = ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(rejected_spans=-1))
    assert partial_success(negative.SerializeToString()) == (0, "")
    assert retry_delay(RetryInfo(retry_delay=Duration(seconds=-1)).SerializeToString()) == 0.0


# --------------------------------------------------------------------------- metric temporality


@pytest.mark.parametrize("preference", ["cumulative", "delta", "lowmemory"])
@pytest.mark.parametrize("histograms", ["explicit_bucket_histogram", "base2_exponential_bucket_histogram"])
def test_metric_preferences_are_the_sdk_exporters_for_the_same_variables(
    preference: str, histograms: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as SdkExporter

    from litestar_omnii_obs._internal.otlp.metrics import metric_preferences

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference.upper())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", histograms)
    sdk = SdkExporter(endpoint="http://127.0.0.1:9", insecure=True)
    try:
        ours = OtlpMetricExporter(
            CollectorTarget("http://127.0.0.1:9").transport, **metric_preferences(preference, histograms)
        )
        assert ours._preferred_temporality == sdk._preferred_temporality
        assert {k: type(v) for k, v in ours._preferred_aggregation.items()} == {
            k: type(v) for k, v in sdk._preferred_aggregation.items()
        }
    finally:
        sdk.shutdown(timeout_millis=100)


def test_delta_points_not_sent_to_a_dead_collector_are_counted_lost() -> None:
    from litestar_omnii_obs._internal.otlp.metrics import metric_preferences

    dead = f"http://127.0.0.1:{free_port()}"
    exporter = build_metric_exporter(dead, timeout=1.0, **metric_preferences("delta", "explicit_bucket_histogram"))
    _export_one_metric(exporter)  # the export at shutdown fails: its delta points are gone
    assert exporter.health.dropped == 1
    cumulative = build_metric_exporter(dead, timeout=1.0)
    _export_one_metric(cumulative)
    assert cumulative.health.dropped == 0  # cumulative points: the next accepted export carries them


def test_a_metric_export_that_cannot_be_encoded_is_counted_lost_and_raises_nothing(
    http_collector: OtlpHttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = build_metric_exporter(http_collector.endpoint, timeout=2.0)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "metric-test"}), metric_readers=[reader])
    provider.get_meter("metric-test").create_counter("omnii.test.huge").add(2**64)  # beyond OTLP's int64
    provider.force_flush()
    provider.shutdown()
    assert exporter.health.lost() == {"could not be encoded": 2}  # the flush and the shutdown's export
    assert http_collector.requests() == []
    assert sum("could not be encoded" in r.getMessage() for r in caplog.records) == 1  # logged once
