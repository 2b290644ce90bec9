"""Per-route policy (handler, Controller and Router ``opt``), excluded routes, the route-aware sampler, kept spans.

Every test runs the app under a real server (uvicorn, real HTTP) or Litestar's TestClient with its
lifespan, against a real OTLP gRPC receiver and a real Sentry ingest on 127.0.0.1, and asserts what
each peer and the metric sink received, route by route.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Controller, Litestar, Router, WebSocket, get, websocket
from litestar.params import FromPath
from litestar.testing import TestClient

from litestar_omnii_obs import (
    ConfigError,
    LatencyConfig,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SamplingContext,
    SentryConfig,
    TracingConfig,
)
from tests.conftest import read_lines, serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Accounts(Controller):
    path = "/accounts"
    opt = {"observability": {"latency": False, "metrics": False}}  # noqa: RUF012  # Litestar's own attribute

    @get("/quiet")
    async def quiet(self) -> str:
        return "quiet"

    @get("/own", opt={"observability": {"traces": 1.0}})  # replaces the Controller's mapping (Litestar's opt)
    async def own(self) -> str:
        return "own"


@get("/untraced", opt={"observability": {"traces": False}})
async def untraced() -> str:
    return "untraced"


@get("/off", opt={"observability": False})
async def off() -> str:
    return "off"


@get("/probe")
async def probe() -> str:
    return "probe"


@get("/plain")
async def plain() -> str:
    return "plain"


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@get("/quiet-boom", opt={"observability": {"sentry_statuses": []}})
async def quiet_boom() -> None:
    raise RuntimeError("not for Sentry")


@get("/slow")
async def slow() -> str:
    await asyncio.sleep(0.2)
    return "slow"


def _config(sink: Path, endpoint: str | None = None, **fields: Any) -> ObservabilityConfig:
    tracing = fields.pop("tracing", {})
    latency = fields.pop("latency", {})
    sentry = fields.pop("sentry", {})
    return ObservabilityConfig(
        environment="test",
        metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
        latency=LatencyConfig(**latency),
        sentry=SentryConfig(**sentry),
        tracing=TracingConfig(otlp_endpoint=endpoint, shutdown_timeout=3.0, **tracing),
        **fields,
    )


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


def _routes(lines: list[dict[str, Any]]) -> list[str]:
    return sorted(line["route"] for line in lines if line["metric"] == "api_latency")


def test_opt_policy_is_inherited_and_gates_line_histogram_and_span(receiver: OtlpHttpReceiver, sink: Path) -> None:
    config = _config(sink, receiver.endpoint, sentry={"traces_sample_rate": 0.0})  # no trace sampled by default
    app = Litestar([Accounts, untraced, off, plain], plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for path in ("/accounts/quiet", "/accounts/own", "/untraced", "/off", "/plain"):
            assert client.get(path).status_code == 200
        joined = client.get("/plain", headers={"traceparent": SAMPLED_PARENT})
        untraced_joined = client.get("/untraced", headers={"traceparent": SAMPLED_PARENT})
        opted_out = client.get("/off")
    # No line and no histogram point where the Controller said so; /accounts/own replaced its mapping.
    assert _routes(read_lines(sink)) == ["/accounts/own", "/plain", "/plain", "/untraced", "/untraced"]
    points = receiver.metric_points("http.server.request.duration")
    assert sorted({p.attributes["http.route"] for p in points}) == ["/accounts/own", "/plain", "/untraced"]
    # traces=1.0 samples /accounts/own whatever the default; the caller's sampled trace is followed on
    # /plain; traces=False records no span even then, but the request keeps the caller's trace id.
    spans = receiver.spans()
    assert sorted(s.name for s in spans) == ["GET /accounts/own", "GET /plain"]
    assert next(s for s in spans if s.name == "GET /plain").trace_id == joined.headers["x-request-id"]
    assert untraced_joined.headers["x-request-id"] == SAMPLED_PARENT.split("-")[1]
    # opt False: nothing at all, not even X-Request-ID.
    assert "x-request-id" not in opted_out.headers


def test_exclude_routes_by_template_and_a_template_no_route_has_is_warned(
    receiver: OtlpHttpReceiver, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    config = _config(sink, receiver.endpoint, latency={"exclude_routes": ("/probe", "/no-such-route")})
    app = Litestar([probe, plain], plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        client.get("/probe")
        client.get("/plain")
    assert _routes(read_lines(sink)) == ["/plain"]
    assert [s.name for s in receiver.spans()] == ["GET /plain"]
    assert {p.attributes["http.route"] for p in receiver.metric_points("http.server.request.duration")} == {"/plain"}
    warnings = [r.getMessage() for r in obs_log if r.levelno == logging.WARNING and "EXCLUDE_ROUTES" in r.getMessage()]
    assert warnings == ["OMNII_OBS_EXCLUDE_ROUTES: no route has the template '/no-such-route'"]


@pytest.mark.parametrize(
    ("opt", "problem"),
    [
        ({"tracez": 0.5}, "one of the keys traces, latency, metrics, sentry_statuses"),
        ({"traces": 2}, "a sample rate in [0, 1]"),
        ({"latency": "no"}, "True or False"),
        ({"sentry_statuses": [500, 999]}, "HTTP status codes"),
        ("off", "False, or a mapping"),
    ],
)
def test_a_mistyped_policy_fails_at_start_up_naming_the_route(sink: Path, opt: object, problem: str) -> None:
    router = Router("/v1", route_handlers=[get("/items/{item_id:int}", opt={"observability": opt})(_item)])
    app = Litestar([router], plugins=[ObservabilityPlugin(_config(sink))])
    with pytest.raises(BaseException) as raised, TestClient(app):  # noqa: PT011  # a group around the ConfigError
        pass
    error = _config_error(raised.value)
    [(name, _, allowed)] = error.problems
    assert "GET /v1/items/{item_id} (" in name
    assert problem in allowed


def test_a_websocket_policy_is_checked_at_start_up_and_its_template_can_be_excluded(
    sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    @websocket("/ws", opt={"observability": {"trace": 2}})
    async def mistyped(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()

    app = Litestar([mistyped], plugins=[ObservabilityPlugin(_config(sink))])
    with pytest.raises(BaseException) as raised, TestClient(app):  # noqa: PT011  # a group around the ConfigError
        pass
    [(name, _, allowed)] = _config_error(raised.value).problems
    assert "/ws (mistyped)" in name
    assert "one of the keys traces" in allowed

    @websocket("/ws")
    async def echo(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        await socket.send_text(await socket.receive_text())
        await socket.close()

    config = _config(sink, latency={"exclude_routes": ("/ws",)})
    with (
        TestClient(Litestar([echo], plugins=[ObservabilityPlugin(config)])) as client,
        client.websocket_connect("/ws") as socket,
    ):
        socket.send_text("hi")
        assert socket.receive_text() == "hi"
    assert not [r for r in obs_log if "EXCLUDE_ROUTES" in r.getMessage()]
    assert [line for line in read_lines(sink) if line.get("route") == "/ws"] == []


async def _item(item_id: FromPath[int]) -> int:
    return item_id


def _config_error(exc: BaseException) -> ConfigError:
    """The ConfigError a failed start-up raised (TestClient wraps it in an exception group)."""
    while not isinstance(exc, ConfigError):
        assert isinstance(exc, BaseExceptionGroup), exc
        exc = exc.exceptions[0]
    return exc


def test_sentry_statuses_per_route(sink: Path) -> None:
    with SentryIngest() as ingest:
        config = _config(sink, sentry={"dsn": ingest.dsn})
        app = Litestar([boom, quiet_boom], plugins=[ObservabilityPlugin(config)])
        with serve(app) as url, httpx.Client(base_url=url) as client:
            assert client.get("/quiet-boom").status_code == 500
            assert client.get("/boom").status_code == 500
        events = ingest.events()
    assert [e["transaction"] for e in events] == ["GET /boom"]


def test_traces_sampler_sees_the_route_and_its_rate_decides_by_trace_id(receiver: OtlpHttpReceiver, sink: Path) -> None:
    seen: list[SamplingContext] = []

    def sampler(context: SamplingContext) -> float | bool:
        seen.append(context)
        if context.route == "/probe":
            return False
        return True if context.parent_sampled is None else 0.0  # drops joined traces even when sampled upstream

    config = _config(sink, receiver.endpoint, traces_sampler=sampler)
    app = Litestar([probe, plain], plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        client.get("/probe")
        client.get("/plain", headers={"X-Tenant": "acme"})
        client.get("/plain", headers={"traceparent": SAMPLED_PARENT})
        client.get("/missing")
    assert [s.name for s in receiver.spans()] == ["GET /plain", "GET"]  # the 404 has no route: the method alone
    assert [(c.route, c.method, c.parent_sampled) for c in seen] == [
        ("/probe", "GET", None),
        ("/plain", "GET", None),
        ("/plain", "GET", True),
        (None, "GET", None),
    ]
    assert seen[1].headers["x-tenant"] == "acme"


def test_a_sampler_that_raises_is_logged_once_and_the_configured_rule_decides(
    receiver: OtlpHttpReceiver, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    def sampler(context: SamplingContext) -> float:
        raise LookupError("no rule for " + str(context.route))

    app = Litestar([plain], plugins=[ObservabilityPlugin(_config(sink, receiver.endpoint, traces_sampler=sampler))])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        statuses = [client.get("/plain").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert [s.name for s in receiver.spans()] == ["GET /plain"] * 3  # environment "test": 100% by default
    failures = [r for r in obs_log if "traces_sampler raised" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


@pytest.mark.parametrize("verdict", [None, float("nan"), "yes"])
def test_a_sampler_that_returns_no_rate_is_logged_once_and_the_configured_rule_decides(
    receiver: OtlpHttpReceiver, sink: Path, obs_log: list[logging.LogRecord], verdict: object
) -> None:
    def sampler(context: SamplingContext) -> Any:
        return verdict

    app = Litestar([plain], plugins=[ObservabilityPlugin(_config(sink, receiver.endpoint, traces_sampler=sampler))])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        responses = [client.get("/plain") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(r.headers.get("x-request-id") for r in responses)  # still observed
    assert _routes(read_lines(sink)) == ["/plain"] * 3
    assert [s.name for s in receiver.spans()] == ["GET /plain"] * 3  # environment "test": 100% by default
    failures = [r for r in obs_log if "traces_sampler raised or returned" in r.getMessage()]
    assert len(failures) == 1


def test_dropped_requests_that_fail_or_are_slow_keep_their_server_span(receiver: OtlpHttpReceiver, sink: Path) -> None:
    config = _config(
        sink, receiver.endpoint, sentry={"traces_sample_rate": 0.0}, tracing={"keep_slower_than_ms": 100.0}
    )
    app = Litestar([plain, boom, slow], plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        failed = client.get("/boom")
        client.get("/plain")
        slowed = client.get("/slow")
    spans = {s.name: s for s in receiver.spans()}
    assert sorted(spans) == ["GET /boom", "GET /slow"]  # the sampler dropped all three; /plain stays dropped
    kept_error, kept_slow = spans["GET /boom"], spans["GET /slow"]
    assert kept_error.attributes["omnii.kept"] == "status"
    assert kept_error.status_code == "error"
    assert kept_error.event_names() == ["exception"]
    assert kept_error.attributes["http.response.status_code"] == 500
    assert kept_slow.attributes["omnii.kept"] == "slow"
    # The ids the client and the line got are the kept span's; its start is the request's.
    assert kept_error.trace_id == failed.headers["x-request-id"]
    assert kept_slow.end_time_unix_nano - kept_slow.start_time_unix_nano >= 200_000_000
    lines = {line["route"]: line for line in read_lines(sink)}
    assert lines["/boom"]["span_id"] == kept_error.span_id
    assert slowed.headers["x-request-id"] == kept_slow.trace_id
    # The line says which trace ids have a recorded span: the kept ones do.
    assert [(r, lines[r]["sampled"]) for r in ("/boom", "/plain", "/slow")] == [
        ("/boom", True),
        ("/plain", False),
        ("/slow", True),
    ]


def test_keeping_can_be_turned_off(receiver: OtlpHttpReceiver, sink: Path) -> None:
    config = _config(
        sink, receiver.endpoint, sentry={"traces_sample_rate": 0.0}, tracing={"keep_statuses": frozenset()}
    )
    app = Litestar([boom], plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/boom").status_code == 500
    assert receiver.spans() == []


def test_from_env_takes_the_fields_only_code_can_give(sink: Path) -> None:
    def sampler(context: SamplingContext) -> bool:
        return context.route != "/probe"

    config = ObservabilityConfig.from_env(
        {"OMNII_OBS_METRICS_SINK": str(sink), "OMNII_OBS_EXCLUDE_ROUTES": "/probe"}, traces_sampler=sampler
    )
    assert config.traces_sampler is sampler
    assert (config.metrics.sink, config.latency.exclude_routes) == (str(sink), ("/probe",))
    with pytest.raises(ConfigError) as invalid:
        ObservabilityConfig.from_env({"OMNII_OBS_EXCLUDE_ROUTES": "health"}, traces_sampler=sampler)
    assert "OMNII_OBS_EXCLUDE_ROUTES='health'" in str(invalid.value)
