"""One sampling decision per trace: the plugin's fast decision and the SDK's sampler agree, trace by trace."""

from __future__ import annotations

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient
from opentelemetry import baggage, trace
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from litestar_omnii_obs import MetricsConfig, ObservabilityConfig, ObservabilityPlugin, SentryConfig, TracingConfig
from litestar_omnii_obs.testing import ObservabilityCapture

# These tests are about the sampling the app is configured with, so the capture keeps it.
pytestmark = pytest.mark.obs_capture(sampling="app")

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@get("/ping")
async def ping() -> str:
    return "pong"


def run(config: ObservabilityConfig, n: int, headers: dict[str, str] | None = None) -> list[str]:
    with TestClient(Litestar(route_handlers=[ping], plugins=[ObservabilityPlugin(config)])) as client:
        return [client.get("/ping", headers=headers).headers["x-request-id"] for _ in range(n)]


def config(**tracing: object) -> ObservabilityConfig:
    return ObservabilityConfig(
        environment="production",
        metrics=MetricsConfig(sink="off"),
        sentry=SentryConfig(traces_sample_rate=0.25),
        tracing=TracingConfig(**tracing),  # type: ignore[arg-type]
    )


def test_default_sampling_is_the_trace_id_ratio_rule_at_the_sentry_rate(obs_capture: ObservabilityCapture) -> None:
    ids = run(config(), 400)
    bound = TraceIdRatioBased.get_bound_for_rate(0.25)
    expected = {i for i in ids if int(i, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound}
    recorded = {f"{s.context.trace_id:032x}" for s in obs_capture.spans if s.context is not None}
    assert len(set(ids)) == 400  # every request has its own trace id, sampled or not
    assert recorded == expected
    assert 40 < len(recorded) < 160  # about a quarter


@pytest.mark.parametrize("sampler", [None, "parentbased_always_off"])
@pytest.mark.parametrize(("flags", "recorded"), [("01", True), ("00", False)])
def test_a_callers_decision_is_followed(
    obs_capture: ObservabilityCapture, flags: str, recorded: bool, sampler: str | None
) -> None:
    # parentbased_always_off records nothing of its own, yet a sampled caller's requests are recorded and ended.
    ids = run(config(sampler=sampler), 5, {"traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-{flags}"})
    assert ids == [CALLER_TRACE] * 5
    assert len(obs_capture.spans) == (5 if recorded else 0)
    assert all(s.attributes is not None and s.attributes["http.response.status_code"] == 200 for s in obs_capture.spans)


@pytest.mark.parametrize(
    ("sampler", "arg", "share"),
    [
        ("always_on", None, 1.0),
        ("always_off", None, 0.0),
        ("traceidratio", 0.5, 0.5),
        ("parentbased_always_off", None, 0),
    ],
)
def test_an_explicit_sampler_rules(
    obs_capture: ObservabilityCapture, sampler: str, arg: float | None, share: float
) -> None:
    ids = run(config(sampler=sampler, sampler_arg=arg), 200)
    bound = TraceIdRatioBased.get_bound_for_rate(share)
    expected = {i for i in ids if int(i, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound}
    assert {f"{s.context.trace_id:032x}" for s in obs_capture.spans if s.context is not None} == expected


@get("/current")
async def current_span() -> dict[str, object]:
    context = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "sampled": context.trace_flags.sampled,
        "remote": context.is_remote,
        "state": context.trace_state.to_header(),
        "recording": trace.get_current_span().is_recording(),
    }


@pytest.mark.parametrize("caller", [None, f"00-{CALLER_TRACE}-b7ad6b7169203331-00"])
def test_a_dropped_request_span_still_gives_code_and_logs_its_ids(caller: str | None) -> None:
    """An unsampled request has a current span whose ids are the ones X-Request-ID and the metric line carry."""
    headers = {} if caller is None else {"traceparent": caller, "tracestate": "vendor=kept"}
    app = Litestar(route_handlers=[current_span], plugins=[ObservabilityPlugin(config(sampler="always_off"))])
    with TestClient(app) as client:
        response = client.get("/current", headers=headers)
    seen = response.json()
    assert response.headers["x-request-id"] == seen["trace_id"]
    assert seen["sampled"] is False
    assert seen["recording"] is False
    assert seen["remote"] is False
    assert int(seen["span_id"], 16) != 0
    if caller is None:
        assert seen["trace_id"] != CALLER_TRACE
        assert seen["state"] == ""
    else:
        assert seen["trace_id"] == CALLER_TRACE  # the caller's trace goes on, with its vendor state
        assert seen["state"] == "vendor=kept"
        assert seen["span_id"] != "b7ad6b7169203331"


@get("/baggage")
async def current_baggage() -> dict[str, object]:
    return {
        "baggage": dict(baggage.get_all()),
        "trace_id": f"{trace.get_current_span().get_span_context().trace_id:032x}",
    }


@pytest.mark.parametrize(("sampler", "flags"), [("always_off", "00"), ("parentbased_always_on", "01")])
def test_the_callers_baggage_is_current_with_the_request_span(
    obs_capture: ObservabilityCapture, sampler: str, flags: str
) -> None:
    headers = {"traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-{flags}", "baggage": "tenant=acme,plan=pro"}
    app = Litestar(route_handlers=[current_baggage], plugins=[ObservabilityPlugin(config(sampler=sampler))])
    with TestClient(app) as client:
        seen = client.get("/baggage", headers=headers).json()
        after = client.get("/baggage").json()  # the next request starts from nothing
    assert seen == {"baggage": {"tenant": "acme", "plan": "pro"}, "trace_id": CALLER_TRACE}
    assert after["baggage"] == {}
    assert after["trace_id"] != CALLER_TRACE
    assert len(obs_capture.spans) == (1 if flags == "01" else 0) + (1 if sampler == "parentbased_always_on" else 0)


@get("/always", opt={"observability": {"traces": 1.0}})
async def always() -> str:
    return "traced"


def test_a_route_with_its_own_rate_is_recorded_and_ended_under_a_sampler_that_keeps_none(
    obs_capture: ObservabilityCapture,
) -> None:
    # always_off, no kept statuses, no duration metric: only the route's rate records a span, and it is ended.
    quiet = config(sampler="always_off", keep_statuses=frozenset(), metrics_exporter=("none",))
    with TestClient(Litestar(route_handlers=[ping, always], plugins=[ObservabilityPlugin(quiet)])) as client:
        assert client.get("/ping").status_code == 200
        assert client.get("/always").status_code == 200
    assert [(s.name, (s.attributes or {}).get("http.response.status_code")) for s in obs_capture.spans] == [
        ("GET /always", 200)
    ]
