"""Sentry: one event per server error, scrubbed, delivered at shutdown — against a real ingest server.

Events travel through sentry-sdk's own HTTP transport to ``SentryIngest`` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import sentry_sdk
from litestar import Litestar, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from litestar_omnii_obs import (
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
    capture_error,
    timed_operation,
)
from tests.conftest import free_port, serve, wait_until
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

SECRETS = {
    "header": "hdr-secret-0001",
    "cookie": "cookie-secret-0002",
    "query": "query-secret-0003",
    "local": "local-secret-0004",
    "breadcrumb": "crumb-secret-0005",
    "extra": "extra-secret-0006",
    "tag": "tag-secret-0007",
    "apikey": "apikey-secret-0008",
    "nested": "nested-secret-0009",
    "custom": "custom-secret-0010",
}


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


def config_for(dsn: str | None, sink: Path, **sentry: Any) -> ObservabilityConfig:
    tracing = sentry.pop("tracing", TracingConfig())
    return ObservabilityConfig(
        environment="staging",
        version="7.7.7",
        metrics=MetricsConfig(sink=str(sink)),
        sentry=SentryConfig(dsn=dsn, **{"flush_timeout": 3.0, **sentry}),
        tracing=tracing,
    )


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    return {"id": user_id}


@get("/boom")
async def boom() -> None:
    async with timed_operation("graph_query"):
        await asyncio.sleep(0)
    raise RuntimeError("boom happened")


@get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="short and stout")


@get("/unavailable")
async def unavailable() -> None:
    raise HTTPException(status_code=503, detail="try later")


@get("/timeout")
async def timeout() -> None:
    raise TimeoutError("upstream slow")


@get("/reset")
async def reset() -> None:
    raise ConnectionResetError("peer reset")


@post("/leak", status_code=200)
async def leak(request: Request[Any, Any, Any]) -> None:
    password = SECRETS["local"]  # a local variable Sentry would ship with the frame
    sentry_sdk.add_breadcrumb(category="auth", message="login", data={"password": SECRETS["breadcrumb"]})
    raise RuntimeError(f"leak test {len(password)}")


@get("/manual/{n:int}")
async def manual(n: FromPath[int]) -> dict[str, str | None]:
    async with timed_operation(f"op-{n}"):
        await asyncio.sleep(0.001 * (n % 3))
    event_id = capture_error(
        LookupError(f"manual {n}"), user_id=f"user-{n}", tags={"request_n": str(n)}, extra={"n": n}
    )
    return {"event_id": event_id}


HANDLERS = [get_user, boom, teapot, unavailable, timeout, reset, leak, manual]


def app_with(config: ObservabilityConfig, **kwargs: Any) -> Litestar:
    return Litestar(route_handlers=HANDLERS, plugins=[ObservabilityPlugin(config)], **kwargs)


def exception_types(event: dict[str, Any]) -> list[str]:
    return [value["type"] for value in event["exception"]["values"]]


def test_one_event_per_server_error_with_request_context(ingest: SentryIngest, sink: Path) -> None:
    app = app_with(config_for(ingest.dsn, sink))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        failed = client.get("/boom", params={"page": "2"})
        for path in ("/users/1", "/teapot", "/nope", "/users/x"):
            client.get(path)
        client.delete("/users/1")
    assert failed.status_code == 500
    [event] = ingest.events()
    assert exception_types(event) == ["RuntimeError"]
    assert event["exception"]["values"][0]["value"] == "boom happened"
    assert event["transaction"] == "GET /boom"
    assert (event["environment"], event["release"]) == ("staging", "7.7.7")
    assert event["request"]["method"] == "GET"
    assert event["request"]["url"] == f"{url}/boom"
    assert event["request"]["query_string"] == "page=2"
    assert event["tags"]["http.status_code"] == "500"
    assert event["tags"]["trace_id"] == failed.headers["x-request-id"]
    assert event["contexts"]["trace"]["trace_id"] == failed.headers["x-request-id"]
    crumbs = [c for c in event["breadcrumbs"]["values"] if c.get("category") == "timed_operation"]
    assert [c["data"]["operation"] for c in crumbs] == ["graph_query"]


def test_capture_statuses_and_ignored_errors_are_configurable(ingest: SentryIngest, sink: Path) -> None:
    config = config_for(ingest.dsn, sink, capture_status_codes=frozenset({418, 500}))
    app = app_with(config)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        statuses = [client.get(p).status_code for p in ("/teapot", "/unavailable", "/timeout", "/reset", "/boom")]
    assert statuses == [418, 503, 500, 500, 500]
    events = ingest.events()
    # 418 is now reported, 503 is not; TimeoutError and ConnectionError subclasses are ignored.
    assert sorted(exception_types(e)[0] for e in events) == ["HTTPException", "RuntimeError"]


def test_secrets_never_leave_the_process(ingest: SentryIngest, sink: Path) -> None:
    config = config_for(ingest.dsn, sink, scrub_keys=("x-custom-thing",))
    app = app_with(config)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        client.post(
            "/leak",
            params={"token": SECRETS["query"], "page": "3"},
            headers={
                "Authorization": f"Bearer {SECRETS['header']}",
                "Cookie": f"sessionid={SECRETS['cookie']}",
                "X-Api-Key": SECRETS["apikey"],
                "X-Custom-Thing": SECRETS["custom"],
            },
            json={"password": "body-secret"},
        )
    capture_error_outside = asyncio.run(_capture_with_secrets(ingest.dsn, sink))
    assert capture_error_outside is None  # Sentry is off once the app has stopped
    [event] = ingest.events()
    sent = b"".join(ingest.raw_bodies())
    for secret in SECRETS.values():
        assert secret.encode() not in sent
    assert b"page=3" in sent
    assert event["request"]["headers"]["authorization"] == "[Filtered]"
    assert event["request"]["headers"]["x-api-key"] == "[Filtered]"
    assert event["request"]["headers"]["x-custom-thing"] == "[Filtered]"
    assert "token=%5BFiltered%5D" in event["request"]["query_string"]
    frame_vars = event["exception"]["values"][0]["stacktrace"]["frames"][-1]["vars"]
    assert frame_vars["password"] == "[Filtered]"


async def _capture_with_secrets(dsn: str, sink: Path) -> str | None:
    return capture_error(ValueError("x"), tags={"session_id": SECRETS["tag"]}, extra={"api_key": SECRETS["extra"]})


def test_capture_error_scrubs_tags_extra_and_nested_values(ingest: SentryIngest, sink: Path) -> None:
    @get("/report")
    async def report() -> dict[str, str | None]:
        return {
            "id": capture_error(
                KeyError("missing"),
                user_id=99,
                tags={"session_id": SECRETS["tag"], "area": "billing"},
                extra={"api_key": SECRETS["extra"], "payload": {"nested": {"secret_value": SECRETS["nested"]}}},
            )
        }

    app = Litestar(route_handlers=[report], plugins=[ObservabilityPlugin(config_for(ingest.dsn, sink))])
    with serve(app) as url:
        event_id = httpx.get(url + "/report").json()["id"]
    [event] = ingest.events()
    assert event["event_id"] == event_id
    assert event["user"] == {"id": "99"}
    assert event["tags"]["area"] == "billing"
    assert event["tags"]["session_id"] == "[Filtered]"
    assert event["extra"]["api_key"] == "[Filtered]"
    sent = b"".join(ingest.raw_bodies())
    for secret in (SECRETS["tag"], SECRETS["extra"], SECRETS["nested"]):
        assert secret.encode() not in sent


def test_capture_error_scope_never_leaks_between_concurrent_requests(ingest: SentryIngest, sink: Path) -> None:
    app = app_with(config_for(ingest.dsn, sink))

    async def hammer(url: str) -> list[str]:
        async with httpx.AsyncClient(base_url=url) as client:
            responses = await asyncio.gather(*(client.get(f"/manual/{n}") for n in range(30)))
        return [r.json()["event_id"] for r in responses]

    with serve(app) as url:
        ids = asyncio.run(hammer(url))
    events = ingest.wait_for_events(30)
    assert len(events) == 30
    assert sorted(e["event_id"] for e in events) == sorted(ids)
    for event in events:
        n = int(event["exception"]["values"][0]["value"].split()[-1].strip("'"))
        assert event["user"] == {"id": f"user-{n}"}
        assert event["tags"]["request_n"] == str(n)
        assert event["extra"]["n"] == n
        ops = [c["data"]["operation"] for c in event["breadcrumbs"]["values"] if c.get("category") == "timed_operation"]
        assert ops == [f"op-{n}"]


def test_no_dsn_is_one_warning_and_a_working_app(sink: Path, obs_log: list[logging.LogRecord]) -> None:
    app = app_with(config_for(None, sink))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/manual/1").json() == {"event_id": None}
    assert [r.getMessage() for r in obs_log if "SENTRY_DSN" in r.getMessage()] == [
        "SENTRY_DSN is not set: errors are not reported to Sentry"
    ]


def test_event_captured_just_before_shutdown_is_delivered(ingest: SentryIngest, sink: Path) -> None:
    ingest.delay = 0.5  # the event is still in flight when shutdown starts
    app = app_with(config_for(ingest.dsn, sink))
    with serve(app) as url:
        assert httpx.get(url + "/boom").status_code == 500
    # serve() returned: the lifespan exit flushed Sentry before the server stopped.
    assert [exception_types(e) for e in ingest.events()] == [["RuntimeError"]]


def test_an_event_kept_while_sentry_failed_is_sent_at_shutdown_if_sentry_is_back(
    ingest: SentryIngest, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    app = app_with(config_for(ingest.dsn, sink))
    with serve(app) as url:
        ingest.status = 500
        assert httpx.get(url + "/boom").status_code == 500
        assert wait_until(lambda: ingest.events(include_rejected=True))  # the event refused: kept, probe in 2 s
        ingest.status = 200
    # Shut down inside the probe window: the last attempt at shutdown delivers what was kept.
    assert [exception_types(e) for e in ingest.events()] == [["RuntimeError"]]
    messages = [r.getMessage() for r in obs_log if "Sentry event sending" in r.getMessage()]
    assert sum("recovered" in m for m in messages) == 1, messages
    messages = [r.getMessage() for r in obs_log]  # Sentry's OTLP endpoint (the spans) lost nothing either
    assert not any("delivered" in m for m in messages), messages  # the shutdown report: nothing lost


@pytest.mark.parametrize(
    "fault",
    # "slow" waits out a Sentry that answers late: a slow real-server case, run by `make test`, not `make test-fast`.
    ["dead", pytest.param("slow", marks=pytest.mark.reliability), "429", "500"],
)
def test_a_failing_sentry_never_hurts_requests_and_is_logged_once(
    fault: str, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    with SentryIngest() as ingest:
        dsn = f"http://publickey@127.0.0.1:{free_port()}/42" if fault == "dead" else ingest.dsn
        if fault == "slow":
            ingest.delay = 5.0
        elif fault in ("429", "500"):
            ingest.status = int(fault)
        app = app_with(config_for(dsn, sink, flush_timeout=1.0))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            statuses = [client.get("/boom" if i % 2 else "/users/1").status_code for i in range(40)]
    assert statuses == [200, 500] * 20
    messages = [r.getMessage() for r in obs_log]
    failures = [m for m in messages if "Sentry event sending" in m and "is failing" in m]
    if fault == "slow":
        # Slow is not failed: events wait in the transport's queue, not in requests; the one
        # still in flight when the ingest stops may be reported, once.
        assert len(failures) <= 1
    else:
        assert len(failures) == 1
        reason = {"dead": "connection refused", "429": "HTTP 429", "500": "HTTP 500"}[fault]
        assert reason in failures[0]


def test_no_duplicate_when_the_user_also_initialised_sentry(ingest: SentryIngest, sink: Path) -> None:
    from sentry_sdk.integrations.litestar import LitestarIntegration

    sentry_sdk.init(dsn=ingest.dsn, integrations=[LitestarIntegration()], traces_sample_rate=None)
    app = app_with(config_for(ingest.dsn, sink))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/nope").status_code == 404
        assert client.get("/teapot").status_code == 418
    assert [exception_types(e) for e in ingest.events()] == [["RuntimeError"]]


def test_performance_data_goes_to_sentrys_otlp_endpoint_from_the_same_spans(ingest: SentryIngest, sink: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint)
        app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=1.0, tracing=tracing))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            request_ids = [client.get(f"/users/{i}").headers["x-request-id"] for i in range(3)]
        sentry_spans = ingest.wait_for_otlp_spans(3)
        spans = receiver.spans()
    assert sorted(s.trace_id for s in spans) == sorted(request_ids)
    assert sorted((s.trace_id, s.span_id, s.name) for s in sentry_spans) == sorted(
        (s.trace_id, s.span_id, s.name) for s in spans
    )
    assert ingest.transactions() == []  # no second tracer: sentry-sdk's span processor is not on this path
    [request] = {r.sentry_key for r in ingest.otlp_requests()}
    assert request == ingest.dsn.split("//")[1].split("@")[0]


def test_error_event_links_to_the_span_that_was_current(ingest: SentryIngest, sink: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint)
        app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=1.0, tracing=tracing))
        with serve(app) as url:
            response = httpx.get(url + "/boom")
        [event] = ingest.wait_for_events(1)
        [span] = [s for s in receiver.spans() if s.name == "GET /boom"]
    assert response.status_code == 500
    assert event["contexts"]["trace"]["trace_id"] == response.headers["x-request-id"] == span.trace_id
    assert event["contexts"]["trace"]["span_id"] == span.span_id


def test_a_joined_trace_reaches_sentry_whole_and_its_error_carries_the_same_trace_id(
    ingest: SentryIngest, sink: Path
) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{caller_trace}-{caller_span}-01"}
    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint)
        app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=1.0, tracing=tracing))
        with serve(app) as url, httpx.Client(base_url=url, headers=headers) as client:
            ok = client.get("/users/1?token=hunter2-planted-secret")
            failed = client.get("/boom")
        [event] = ingest.wait_for_events(1)
        sentry_spans = ingest.wait_for_otlp_spans(3)  # two server spans and the timed_operation child
        sent = b"".join(ingest.raw_bodies())
    assert ok.headers["x-request-id"] == failed.headers["x-request-id"] == caller_trace
    servers = [s for s in sentry_spans if s.kind == "server"]
    assert sorted(s.name for s in servers) == ["GET /boom", "GET /users/{user_id}"]
    assert {(s.trace_id, s.parent_span_id) for s in servers} == {(caller_trace, caller_span)}
    assert event["contexts"]["trace"]["trace_id"] == caller_trace
    [boom_span] = [s for s in servers if s.name == "GET /boom"]
    assert event["contexts"]["trace"]["span_id"] == boom_span.span_id
    assert b"hunter2-planted-secret" not in sent
    assert b"token=%5BFiltered%5D" in sent  # the span's url.query, scrubbed


def test_an_explicit_sampler_rules_the_collector_and_sentry_keeps_its_share(ingest: SentryIngest, sink: Path) -> None:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint, sampler="always_on")
        app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=0.1, tracing=tracing))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            ids = [client.get(f"/users/{i}").headers["x-request-id"] for i in range(300)]
        collector = {s.trace_id for s in receiver.spans()}
        expected = {
            i for i in ids if int(i, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < TraceIdRatioBased.get_bound_for_rate(0.1)
        }
        sentry = {s.trace_id for s in ingest.wait_for_otlp_spans(len(expected))}
    assert collector == set(ids)  # always_on: the collector gets every trace
    assert sentry == expected  # Sentry: the traces under its rate, by trace id
    assert 10 < len(sentry) < 60


def test_the_span_processor_path_still_works_when_chosen(ingest: SentryIngest, sink: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint)
        app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=1.0, traces="sdk", tracing=tracing))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            request_ids = [client.get(f"/users/{i}").headers["x-request-id"] for i in range(3)]
        transactions = ingest.wait_for_transactions(3)
        spans = receiver.spans()
    assert sorted(t["transaction"] for t in transactions) == ["GET /users/{user_id}"] * 3
    assert sorted(t["contexts"]["trace"]["trace_id"] for t in transactions) == sorted(request_ids)
    assert sorted(s.trace_id for s in spans) == sorted(request_ids)
    assert ingest.otlp_spans() == []


def test_sentry_traces_off_sends_errors_only(ingest: SentryIngest, sink: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint)
        app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=1.0, traces="off", tracing=tracing))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            for i in range(3):
                client.get(f"/users/{i}")
            client.get("/boom")
        ingest.wait_for_events(1)
        assert len([s for s in receiver.spans() if s.kind == "server"]) == 4
    assert ingest.otlp_spans() == []
    assert ingest.transactions() == []


def test_sample_rate_zero_sends_no_transactions(ingest: SentryIngest, sink: Path) -> None:
    app = app_with(config_for(ingest.dsn, sink, traces_sample_rate=0.0))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for i in range(3):
            client.get(f"/users/{i}")
        client.get("/boom")
    assert ingest.transactions() == []
    assert len(ingest.events()) == 1
    assert json.dumps(ingest.events()[0])  # a plain JSON event


def test_event_carries_the_authenticated_user_id(ingest: SentryIngest, sink: Path) -> None:
    from litestar.types import ASGIApp, Receive, Scope, Send

    def fake_auth(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            scope["user"] = {"id": "u-77"}
            await app(scope, receive, send)

        return middleware

    # Request-derived user data is personal data: only with send_default_pii.
    app = app_with(config_for(ingest.dsn, sink, send_default_pii=True), middleware=[fake_auth])
    with serve(app) as url:
        assert httpx.get(url + "/boom").status_code == 500
    [event] = ingest.events()
    assert event["user"]["id"] == "u-77"


def test_request_user_is_not_sent_without_pii(ingest: SentryIngest, sink: Path) -> None:
    from litestar.types import ASGIApp, Receive, Scope, Send

    def fake_auth(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            scope["user"] = {"id": "u-77"}
            await app(scope, receive, send)

        return middleware

    app = app_with(config_for(ingest.dsn, sink), middleware=[fake_auth])
    with serve(app) as url:
        assert httpx.get(url + "/boom").status_code == 500
    [event] = ingest.events()
    assert "u-77" not in json.dumps(event)


@get("/login/{name:str}")
async def login(name: FromPath[str]) -> str:
    sentry_sdk.set_user({"id": name})
    sentry_sdk.set_tag("tenant", f"tenant-of-{name}")
    return name


@get("/fail-as/{name:str}")
async def fail_as(name: FromPath[str]) -> None:
    raise RuntimeError(f"failed for {name}")


@pytest.mark.parametrize("client_kind", ["uvicorn", "test-client"])
def test_what_one_request_sets_on_sentrys_scope_stays_out_of_another_requests_event(
    ingest: SentryIngest, sink: Path, client_kind: str
) -> None:
    app = Litestar([login, fail_as], plugins=[ObservabilityPlugin(config_for(ingest.dsn, sink))])
    if client_kind == "uvicorn":
        with serve(app) as url, httpx.Client(base_url=url) as client:
            assert client.get("/login/alice").status_code == 200
            assert client.get("/fail-as/bob").status_code == 500
    else:
        from litestar.testing import TestClient

        with TestClient(app) as client:
            assert client.get("/login/alice").status_code == 200
            assert client.get("/fail-as/bob").status_code == 500
    [event] = ingest.events()
    assert event["transaction"] == "GET /fail-as/{name}"
    assert "user" not in event or event["user"].get("id") != "alice"
    assert "tenant" not in event.get("tags", {})


def test_enriched_user_keys_are_not_tags_without_pii(ingest: SentryIngest, sink: Path) -> None:
    def enrich(request: Request[Any, Any, Any]) -> dict[str, str]:
        return {"user.id": "u-9", "user.email": "a@b.c", "tenant": "acme"}

    config = msgspec.structs.replace(config_for(ingest.dsn, sink), enrich=enrich)
    with serve(app_with(config)) as url:
        assert httpx.get(url + "/boom").status_code == 500
    [event] = ingest.events()
    assert event["tags"]["tenant"] == "acme"
    assert not [key for key in event["tags"] if key.startswith("user.")]
    assert "user" not in event or "id" not in event["user"]
