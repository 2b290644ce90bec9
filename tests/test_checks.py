"""The live checks behind ``litestar obs`` (checks.py), called directly against real peers on 127.0.0.1.

``check_pipes`` sends one span, one metric point and one event where a config says and reports
each pipe's outcome; ``send_test_error`` raises and reports an error through the request-error
path. The command line around them is in test_cli.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sentry_sdk

from litestar_omnii_obs import ObservabilityConfig, SentryConfig, TracingConfig
from litestar_omnii_obs._internal.checks import PipeResult, check_pipes, send_test_error
from tests.conftest import free_port
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest
from tests.peers.tcp_peers import HungPeer

TIMEOUT = 3.0


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on: connecting is refused."""
    return free_port()


@pytest.fixture(autouse=True)
def _no_sentry_client_left() -> Iterator[None]:
    yield
    sentry_sdk.get_global_scope().set_client(None)


def config_for(endpoint: str | None = None, dsn: str | None = None, **tracing: object) -> ObservabilityConfig:
    return ObservabilityConfig(
        service_name="checked-service",
        tracing=TracingConfig(otlp_endpoint=endpoint, **tracing),  # type: ignore[arg-type]
        sentry=SentryConfig(dsn=dsn),
    )


def by_pipe(results: list[PipeResult]) -> dict[str, PipeResult]:
    assert [r.pipe for r in results] == ["otlp-traces", "otlp-metrics", "sentry"]  # report order
    return {r.pipe: r for r in results}


def test_nothing_configured_reports_every_pipe_off_naming_the_setting() -> None:
    pipes = by_pipe(check_pipes(config_for(), TIMEOUT))
    assert {p.result for p in pipes.values()} == {"off"}
    assert pipes["otlp-traces"].detail == "OTEL_EXPORTER_OTLP_ENDPOINT not set"
    assert pipes["sentry"].detail == "SENTRY_DSN not set"
    assert pipes["sentry"].time_ms is None


@pytest.mark.parametrize(
    ("tracing", "why"),
    [({"enabled": False}, "OMNII_OBS_TRACING=false"), ({"sdk_disabled": True}, "OTEL_SDK_DISABLED=true")],
)
def test_tracing_turned_off_is_named_as_the_reason(tracing: dict[str, object], why: str) -> None:
    pipes = by_pipe(check_pipes(config_for("http://127.0.0.1:9", **tracing), TIMEOUT))
    assert (pipes["otlp-traces"].result, pipes["otlp-traces"].detail) == ("off", why)
    assert (pipes["otlp-metrics"].result, pipes["otlp-metrics"].detail) == ("off", why)


def test_live_peers_get_one_span_one_point_and_one_event(receiver: OtlpHttpReceiver, ingest: SentryIngest) -> None:
    pipes = by_pipe(check_pipes(config_for(receiver.endpoint, ingest.dsn), TIMEOUT))
    assert {p.result for p in pipes.values()} == {"ok"}, pipes
    span = receiver.span("litestar obs check")
    assert pipes["otlp-traces"].detail == f"span {span.trace_id}"
    assert span.resource_attributes["service.name"] == "checked-service"
    assert receiver.wait_for_metric("omnii.check")
    (event,) = ingest.wait_for_events(1)
    assert event["message"] == "litestar obs check from checked-service"
    assert pipes["sentry"].detail.startswith("HTTP 200, event ")
    assert all(p.time_ms is not None and p.time_ms >= 0 for p in pipes.values())


def test_dead_peers_fail_each_pipe_with_a_reason(unused_port: int) -> None:
    dead = f"http://127.0.0.1:{unused_port}"
    # 1 s: the SDK's gRPC metric exporter retries a refused connection until the check's timeout.
    pipes = by_pipe(check_pipes(config_for(dead, f"http://key@127.0.0.1:{unused_port}/1"), 1.0))
    assert {p.result for p in pipes.values()} == {"failed"}
    assert all(p.detail for p in pipes.values())
    assert "key@" not in pipes["sentry"].target  # the DSN's key is never shown


@pytest.mark.parametrize(("status", "detail"), [(500, "HTTP 500"), (429, "HTTP 429 (rate limited)"), (403, "HTTP 403")])
def test_a_sentry_that_answers_an_error_fails_its_pipe(ingest: SentryIngest, status: int, detail: str) -> None:
    ingest.status = status
    pipes = by_pipe(check_pipes(config_for(dsn=ingest.dsn), TIMEOUT))
    assert (pipes["sentry"].result, pipes["sentry"].detail) == ("failed", detail)
    assert ingest.requests_received == 1  # one attempt: the check does not retry


def test_a_peer_that_never_answers_fails_within_the_check_s_bound() -> None:
    with HungPeer() as hung:
        pipes = by_pipe(check_pipes(config_for(hung.endpoint, f"http://key@127.0.0.1:{hung.port}/1"), 0.2))
    assert {p.result for p in pipes.values()} == {"failed"}
    assert hung.accepted >= 1  # it was really tried


def test_the_target_shows_headers_by_name_only(receiver: OtlpHttpReceiver) -> None:
    config = config_for(receiver.endpoint, otlp_headers=(("authorization", "Bearer s3cr3t"),))
    pipes = by_pipe(check_pipes(config, TIMEOUT))
    assert pipes["otlp-traces"].target == f"{receiver.endpoint} (headers authorization=***)"
    assert "s3cr3t" not in repr(pipes)


def test_a_test_error_reaches_sentry_through_the_request_error_path(ingest: SentryIngest) -> None:
    event_id, failure = send_test_error(config_for(dsn=ingest.dsn), "checking the pipe", TIMEOUT)
    assert failure is None
    assert event_id is not None
    (event,) = ingest.wait_for_events(1)
    assert event["event_id"] == event_id
    assert event["tags"]["omnii.test_error"] == "true"
    assert event["exception"]["values"][-1]["type"] == "ObservabilityTestError"
    assert event["exception"]["values"][-1]["value"] == "checking the pipe"


def test_a_test_error_without_a_dsn_says_where_to_set_one() -> None:
    assert send_test_error(config_for(), "x", TIMEOUT) == (
        None,
        "SENTRY_DSN is not set: there is nowhere to send a test error",
    )


@pytest.mark.parametrize("status", [500, 403])
def test_a_test_error_sentry_refuses_is_reported_with_its_reason(ingest: SentryIngest, status: int) -> None:
    ingest.status = status
    event_id, failure = send_test_error(config_for(dsn=ingest.dsn), "x", TIMEOUT)
    assert event_id is not None
    assert failure is not None
    assert f"HTTP {status}" in failure


def test_a_test_error_to_a_dead_sentry_names_the_reason(unused_port: int) -> None:
    event_id, failure = send_test_error(config_for(dsn=f"http://key@127.0.0.1:{unused_port}/1"), "x", TIMEOUT)
    assert event_id is not None
    assert failure == "Sentry did not accept it: connection refused"


def test_a_test_error_to_a_sentry_that_never_answers_says_so_within_its_bound() -> None:
    with HungPeer() as hung:
        event_id, failure = send_test_error(config_for(dsn=f"http://key@127.0.0.1:{hung.port}/1"), "x", 0.2)
        assert hung.accepted >= 1
    assert event_id is not None
    assert failure == "Sentry did not answer within 0.2s"
