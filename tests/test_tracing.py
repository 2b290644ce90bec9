"""Server spans and OTLP metrics, proven against a real OTLP/gRPC receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, get, post
from litestar.params import FromPath
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from litestar_omnii_obs import (
    GraphQueryMetric,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    TracingConfig,
    log_metric,
    timed_operation,
)
from tests.conftest import free_port, read_lines, serve, wait_until
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.otlp_receiver import OtlpReceiver
from tests.peers.tcp_peers import HungPeer, ResettingPeer

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


def config_for(endpoint: str | None, sink: Path, **tracing: Any) -> ObservabilityConfig:
    return ObservabilityConfig(
        environment="test",
        version="3.1.4",
        service_name="svc-under-test",
        metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
        tracing=TracingConfig(otlp_endpoint=endpoint, **{"shutdown_timeout": 3.0, **tracing}),
    )


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    return {"id": user_id}


@get("/crash")
async def crash() -> None:
    raise ValueError("kaput")


@get("/health")
async def health() -> str:
    return "ok"


@post("/graph", status_code=200)
async def graph() -> dict[str, str]:
    user_tracer = trace.get_tracer("user-code")
    with user_tracer.start_as_current_span("user-span"):
        logging.getLogger("user.code").warning("inside user span")
    async with timed_operation("graph_query"):
        await asyncio.sleep(0)
    log_metric(GraphQueryMetric(query_type="cypher", duration=1.5, result_count=1))
    return {"ok": "yes"}


def app_with(config: ObservabilityConfig) -> Litestar:
    return Litestar(route_handlers=[get_user, crash, health, graph], plugins=[ObservabilityPlugin(config)])


def test_one_server_span_per_request_joined_to_the_callers_trace(receiver: OtlpHttpReceiver, sink: Path) -> None:
    app = app_with(config_for(receiver.endpoint, sink))
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with serve(app) as url:
        response = httpx.get(
            url + "/users/42?x=1",
            headers={"traceparent": traceparent, "user-agent": "pytest-agent", "x-request-id": "caller-42"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == CALLER_TRACE
    [span] = receiver.spans()
    assert (span.name, span.kind, span.trace_id, span.parent_span_id) == (
        "GET /users/{user_id}",
        "server",
        CALLER_TRACE,
        CALLER_SPAN,
    )
    port = int(url.rsplit(":", 1)[1])
    assert span.attributes == {
        "http.request.method": "GET",
        "http.route": "/users/{user_id}",
        "url.path": "/users/42",
        "url.query": "x=1",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": port,
        "client.address": "127.0.0.1",
        "user_agent.original": "pytest-agent",
        "http.request.header.x-request-id": ["caller-42"],
        "http.response.status_code": 200,
    }
    assert span.status_code == "unset"
    assert span.resource_attributes["service.name"] == "svc-under-test"
    assert span.resource_attributes["service.version"] == "3.1.4"
    assert span.resource_attributes["deployment.environment.name"] == "test"
    [line] = [r for r in read_lines(sink) if r["metric"] == "api_latency"]
    assert (line["trace_id"], line["span_id"]) == (CALLER_TRACE, span.span_id)


def test_404_500_excluded_and_malformed_traceparent(receiver: OtlpHttpReceiver, sink: Path) -> None:
    app = app_with(config_for(receiver.endpoint, sink))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        missing = client.get("/nope", headers={"traceparent": "00-zzzz-not-valid-01"})
        failed = client.get("/crash")
        excluded = client.get("/health")
        invalid_id = client.get("/users/1", headers={"x-request-id": "bad id\u00e9".encode("latin-1")})
    assert (missing.status_code, failed.status_code, excluded.status_code) == (404, 500, 200)
    assert "x-request-id" not in excluded.headers
    spans = {s.name: s for s in receiver.spans()}
    assert set(spans) == {"GET", "GET /crash", "GET /users/{user_id}"}
    assert spans["GET"].parent_span_id is None  # a bad traceparent starts a fresh trace
    assert spans["GET"].trace_id == missing.headers["x-request-id"]
    assert spans["GET"].attributes["http.response.status_code"] == 404
    assert "http.route" not in spans["GET"].attributes
    assert spans["GET"].status_code == "unset"
    crashed = spans["GET /crash"]
    assert crashed.status_code == "error"
    assert crashed.attributes["error.type"] == "ValueError"
    assert crashed.event_names() == ["exception"]
    assert crashed.events[0].attributes["exception.message"] == "kaput"
    assert failed.headers["x-request-id"] == crashed.trace_id
    assert "http.request.header.x-request-id" not in spans["GET /users/{user_id}"].attributes
    assert invalid_id.headers["x-request-id"] == spans["GET /users/{user_id}"].trace_id


def test_user_spans_and_timed_operations_nest_under_the_request_span(
    receiver: OtlpHttpReceiver, sink: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("user.code").addHandler(handler)
    try:
        app = app_with(config_for(receiver.endpoint, sink))
        with serve(app) as url:
            assert httpx.post(url + "/graph").json() == {"ok": "yes"}
    finally:
        logging.getLogger("user.code").removeHandler(handler)
    spans = {s.name: s for s in receiver.spans()}
    server = spans["POST /graph"]
    assert spans["user-span"].parent_span_id == server.span_id
    assert spans["graph_query"].parent_span_id == server.span_id
    assert {s.trace_id for s in spans.values()} == {server.trace_id}
    [record] = records
    assert record.trace_id == server.trace_id  # type: ignore[attr-defined]
    assert record.span_id == spans["user-span"].span_id  # type: ignore[attr-defined]


def test_request_and_operation_durations_are_exported_as_otlp_metrics(receiver: OtlpHttpReceiver, sink: Path) -> None:
    app = app_with(config_for(receiver.endpoint, sink))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for i in range(3):
            client.get(f"/users/{i}")
        client.get("/crash")
        client.post("/graph")
    points = receiver.metric_points("http.server.request.duration")
    by_route = {(p.attributes["http.route"], p.attributes["http.response.status_code"]): p for p in points}
    assert by_route[("/users/{user_id}", 200)].count == 3
    assert by_route[("/crash", 500)].count == 1
    assert {p.attributes["http.request.method"] for p in points} == {"GET", "POST"}
    assert {p.unit for p in points} == {"s"}
    assert list(by_route[("/crash", 500)].explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    [graph] = receiver.metric_points("omnii.graph_query.duration")
    assert (graph.attributes, graph.count, graph.sum) == ({"query_type": "cypher"}, 1, 1.5)
    [operation] = receiver.metric_points("omnii.operation.duration")
    assert operation.attributes == {"operation": "graph_query", "outcome": "ok"}


def test_dead_collector_never_breaks_requests_and_is_logged_once(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = app_with(config_for(dead, sink, shutdown_timeout=3.0, export_timeout=0.5))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        statuses = [client.get(f"/users/{i}").status_code for i in range(100)]
    assert statuses == [200] * 100
    mine = [r.getMessage() for r in obs_log if dead in r.getMessage()]
    assert sum("trace export" in m and "is failing" in m for m in mine) == 1
    assert sum("metric export" in m and "is failing" in m for m in mine) == 1
    # At shutdown, one summary line per destination: every one of the 100 spans is counted as lost.
    assert sum("OTLP trace export to" in m and "0 span(s) delivered, 100 lost" in m for m in mine) == 1, mine
    assert sum("OTLP metric export to" in m and "delivered" in m for m in mine) == 1, mine
    assert len(mine) == 4
    assert len(read_lines(sink)) == 100


def test_a_traces_only_backend_gets_every_span_and_the_metrics_warning_says_why_and_how_to_stop(
    sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    # Jaeger, Tempo or Phoenix over gRPC: no metrics service, so a metric export is answered UNIMPLEMENTED.
    with OtlpReceiver(metrics=False) as traces_only:
        app = app_with(config_for(traces_only.endpoint, sink, otlp_protocol="grpc"))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            statuses = [client.get(f"/users/{i}").status_code for i in range(5)]
        spans = traces_only.spans()
    assert statuses == [200] * 5
    assert [s.name for s in spans] == ["GET /users/{user_id}"] * 5
    [failing] = [
        r.getMessage() for r in obs_log if "metric export" in r.getMessage() and "is failing" in r.getMessage()
    ]
    assert "(gRPC UNIMPLEMENTED)" in failing
    assert "set OTEL_METRICS_EXPORTER=none" in failing
    assert not [r for r in obs_log if "trace export" in r.getMessage() and "is failing" in r.getMessage()]


def test_with_metrics_turned_off_a_traces_only_backend_gets_no_metric_export(
    sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    with OtlpReceiver(metrics=False) as traces_only:
        config = ObservabilityConfig.from_env(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": traces_only.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_METRICS_EXPORTER": "none",
                "APP_ENV": "test",
            },
            metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
        )
        with serve(app_with(config)) as url, httpx.Client(base_url=url) as client:
            assert client.get("/users/1").status_code == 200
        assert [s.name for s in traces_only.spans()] == ["GET /users/{user_id}"]
    assert not [r for r in obs_log if "is failing" in r.getMessage() or "lost" in r.getMessage()]


class EndedSpans(SpanProcessor):
    """Counts the spans a provider ends, each once the plugin's own processor (added before) has taken it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.count = 0
        provider.add_span_processor(self)

    def on_end(self, span: ReadableSpan) -> None:
        self.count += 1


# A collector stopped and restarted: a slow real-server test, run by `make test`, not `make test-fast`.
@pytest.mark.reliability
def test_export_resumes_when_the_collector_comes_back(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    port = free_port()
    receiver = OtlpReceiver(port=port).start()
    plugin = ObservabilityPlugin(config_for(receiver.endpoint, sink, export_timeout=1.0, otlp_protocol="grpc"))
    app = Litestar(route_handlers=[get_user], plugins=[plugin])
    try:
        with serve(app) as url, httpx.Client(base_url=url) as client:
            provider = plugin.tracer_provider
            assert isinstance(provider, TracerProvider)
            ended = EndedSpans(provider)
            client.get("/users/1")
            assert wait_until(lambda: ended.count == 1)  # a server ends the span after its client has the answer
            provider.force_flush(5000)
            receiver.stop()
            client.get("/users/2")
            assert wait_until(lambda: ended.count == 2)  # flushed with the collector down, not after it is back
            provider.force_flush(5000)
            receiver.start()
            # While the collector is down its spans are kept and it is probed every 2 s; once a probe
            # finds it back, what was kept is sent, then the rest.
            for n in range(3, 33):
                client.get(f"/users/{n}")
                provider.force_flush(10_000)
                time.sleep(0.25)
                if {"/users/2", f"/users/{n}"} <= {s.attributes["url.path"] for s in receiver.spans()}:
                    break
    finally:
        receiver.stop()
    paths = sorted(s.attributes["url.path"] for s in receiver.spans())
    assert "/users/1" in paths
    assert "/users/2" in paths  # ended while the collector was down: kept, then delivered
    assert any(p not in ("/users/1", "/users/2") for p in paths)  # export resumed
    messages = [r.getMessage() for r in obs_log if receiver.endpoint in r.getMessage()]
    assert sum("trace export" in m and "is failing" in m for m in messages) == 1
    assert sum("trace export" in m and "recovered" in m for m in messages) == 1


def test_spans_kept_while_the_collector_was_down_are_sent_at_shutdown_if_it_is_back(
    sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    receiver = OtlpHttpReceiver(port=free_port()).start()
    plugin = ObservabilityPlugin(config_for(receiver.endpoint, sink, export_timeout=1.0))
    try:
        with TestClient(Litestar(route_handlers=[get_user], plugins=[plugin])) as client:
            provider = plugin.tracer_provider
            assert isinstance(provider, TracerProvider)
            receiver.stop()
            client.get("/users/1")
            provider.force_flush()  # connection refused: kept, and the next probe is 2 s away
            receiver.start()
        # Shut down inside the probe window: the last attempt at shutdown delivers what was kept.
        assert [s.attributes["url.path"] for s in receiver.spans()] == ["/users/1"]
    finally:
        receiver.stop()
    messages = [r.getMessage() for r in obs_log if "trace export" in r.getMessage()]
    assert sum("is failing" in m for m in messages) == 1, messages
    assert sum("recovered" in m for m in messages) == 1, messages
    assert not any("delivered" in m for m in messages), messages  # the shutdown report: nothing lost


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("refused", "1 final export not delivered (points since the last accepted export)"),
        ("hung", "1 final export cut off by the shutdown timeout"),
    ],
)
def test_a_final_metric_export_that_does_not_arrive_is_counted(
    fault: str, reason: str, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    peer = HungPeer() if fault == "hung" else ResettingPeer()
    with peer:
        # The hung collector holds the export longer than the shutdown waits: the shutdown gives up on it.
        config = config_for(peer.endpoint, sink, export_timeout=10.0, shutdown_timeout=0.5, traces_exporter=("none",))
        with TestClient(app_with(config)) as client:
            assert client.get("/users/1").status_code == 200
    reports = [r.getMessage() for r in obs_log if "metric export" in r.getMessage() and "delivered" in r.getMessage()]
    assert len(reports) == 1, reports
    assert f"0 export(s) delivered, 1 lost ({reason})" in reports[0]


def test_a_final_delta_export_held_by_a_rate_limit_is_counted_once(
    monkeypatch: pytest.MonkeyPatch, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")  # the SDK's reader: an export every 0.1 s
    with OtlpHttpReceiver() as receiver:
        receiver.fail_with(429, retry_after=30)
        config = config_for(receiver.endpoint, sink, metrics_temporality="delta", traces_exporter=("none",))
        with TestClient(app_with(config)) as client:
            assert client.get("/users/1").status_code == 200
            assert wait_until(lambda: receiver.requests_received >= 1)  # 429: no export for 30 s
        assert receiver.requests_received == 1  # the final export too waited: the server's pause holds
    (report,) = [r.getMessage() for r in obs_log if "metric export" in r.getMessage() and "delivered" in r.getMessage()]
    # Each export held back lost its delta points, the final one included, each counted once.
    assert "cut off" not in report, report
    lost = int(report.split("delivered, ")[1].split(" lost")[0])
    assert f"{lost} not sent while the collector was down (delta points)" in report, report


@pytest.mark.parametrize(("protocol", "warned"), [("http/protobuf", True), ("grpc", False)])
def test_the_grpc_port_over_http_is_warned_about_at_start_up(
    protocol: str, warned: bool, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    # A collector address from the days gRPC was the default: over http/protobuf every export would fail.
    config = config_for("http://127.0.0.1:4317", sink, otlp_protocol=protocol, export_timeout=0.5)
    with TestClient(app_with(config)) as client:
        assert client.get("/users/1").status_code == 200
    said = [r.getMessage() for r in obs_log if "port 4317 is OTLP/gRPC's" in r.getMessage()]
    if warned:
        assert len(said) == 2, said  # traces and metrics, each once
        assert all("OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in m for m in said)
    else:
        assert said == []


def test_no_endpoint_warns_once_and_still_gives_request_ids(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    app = app_with(config_for(None, sink))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        ids = {client.get(f"/users/{i}").headers["x-request-id"] for i in range(5)}
    assert len(ids) == 5
    assert all(len(i) == 32 and int(i, 16) for i in ids)
    warnings = [r.getMessage() for r in obs_log if "OTEL_EXPORTER_OTLP_ENDPOINT" in r.getMessage()]
    assert len(warnings) == 1
    assert {r["trace_id"] for r in read_lines(sink)} == ids


_OWN_PROVIDER_SCRIPT = """
import logging, sys
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.test_tracing import app_with, config_for

messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("litestar_omnii_obs").addHandler(handler)
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with TestClient(app_with(config_for(None, __import__("pathlib").Path(sys.argv[1])))) as client:
    client.get("/users/5")
assert trace.get_tracer_provider() is provider
assert [s.name for s in exporter.get_finished_spans()] == ["GET /users/{user_id}"], exporter.get_finished_spans()
assert sum("own OpenTelemetry TracerProvider" in m for m in messages) == 1, messages
print("OK")
"""


def test_an_application_provider_is_used_not_replaced(sink: Path) -> None:
    # OpenTelemetry's global provider can be set once per process: a fresh process, as an application is.
    result = subprocess.run(
        [sys.executable, "-c", _OWN_PROVIDER_SCRIPT, str(sink)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_sampled_out_requests_still_get_ids_and_records(
    receiver: OtlpHttpReceiver, sink: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")  # the config wins over os.environ
    app = app_with(config_for(receiver.endpoint, sink, sampler="always_off"))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        responses = [client.get(f"/users/{i}") for i in range(5)]
    assert all(len(r.headers["x-request-id"]) == 32 for r in responses)
    assert receiver.spans() == []
    assert len(read_lines(sink)) == 5


def test_tracing_can_be_turned_off(receiver: OtlpHttpReceiver, sink: Path) -> None:
    app = app_with(config_for(receiver.endpoint, sink, enabled=False))
    with serve(app) as url:
        response = httpx.get(url + "/users/5")
    assert "x-request-id" not in response.headers
    assert receiver.spans() == []
    assert [r["route"] for r in read_lines(sink)] == ["/users/{user_id}"]


def test_otel_resource_attributes_are_added(
    receiver: OtlpHttpReceiver, sink: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=from-os-environ")  # the config wins over os.environ
    attributes = (("team", "payments"), ("service.name", "ignored"))
    app = app_with(config_for(receiver.endpoint, sink, resource_attributes=attributes))
    with serve(app) as url:
        httpx.get(url + "/users/1")
    [span] = receiver.spans()
    assert span.resource_attributes["team"] == "payments"
    assert span.resource_attributes["service.name"] == "svc-under-test"


def test_a_metrics_protocol_that_cannot_load_stops_start_up_and_leaves_no_thread(
    receiver: OtlpHttpReceiver, sink: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from litestar_omnii_obs import ConfigError

    monkeypatch.setitem(sys.modules, "grpc", None)  # as without the grpc extra
    monkeypatch.delitem(sys.modules, "litestar_omnii_obs._internal.otlp.grpc_transport", raising=False)
    before = {t.name for t in threading.enumerate()}
    config = config_for(receiver.endpoint, sink, otlp_metrics_protocol="grpc")
    with pytest.raises(BaseException) as failed, TestClient(app_with(config)):  # noqa: PT011 - the group's, below
        pass
    wanted = r"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL(.|\n)*litestar-omnii-obs\[grpc\]"
    assert isinstance(failed.value, ConfigError) or failed.group_contains(ConfigError, match=wanted), failed.value
    left = {t.name for t in threading.enumerate() if t.is_alive()} - before
    assert not {name for name in left if name.startswith("omnii-obs")}, left
