"""The sampled server span is recorded without the SDK's per-span work, yet behaves as an SDK span to users."""

from __future__ import annotations

import logging

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

from litestar_omnii_obs import (
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
    timed_operation,
)
from litestar_omnii_obs._internal.server_span import ServerSpan, ServerSpans
from litestar_omnii_obs.testing import ObservabilityCapture


@get("/work")
async def work() -> str:
    span = trace.get_current_span()
    assert isinstance(span, ServerSpan)
    span.set_attribute("app.user", "u-1")
    span.set_attributes({"app.items": [1, 2, 3], "app.bad": {"no": "dicts"}})  # type: ignore[dict-item]
    span.add_event("cache.miss", {"key": "k"})
    span.update_name("GET /work (renamed)")
    async with timed_operation("db"):
        pass
    with trace.get_tracer("user").start_as_current_span("user-span"):
        pass
    return "ok"


@get("/plain")
async def plain() -> str:
    with trace.get_tracer("user").start_as_current_span("user-span"):
        return "ok"


@get("/rated", opt={"observability": {"traces": 1.0}})
async def rated() -> str:
    return "ok"


@get("/fail")
async def fail() -> None:
    trace.get_current_span().set_status(StatusCode.OK)  # OK is final, as in the SDK
    raise ValueError("nope")


def run(*paths: str) -> None:
    config = ObservabilityConfig(metrics=MetricsConfig(sink="off"), sentry=SentryConfig(traces_sample_rate=1.0))
    with TestClient(Litestar(route_handlers=[work, fail], plugins=[ObservabilityPlugin(config)])) as client:
        for path in paths:
            client.get(path)


def test_user_code_can_add_to_the_server_span_and_children_nest(obs_capture: ObservabilityCapture) -> None:
    run("/work")
    spans = {span.name: span for span in obs_capture.spans}
    server = spans["GET /work (renamed)"]
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["app.user"] == "u-1"
    assert server.attributes["app.items"] == (1, 2, 3)
    assert "app.bad" not in server.attributes  # invalid values are dropped, as the SDK does
    assert server.attributes["http.response.status_code"] == 200
    assert [(e.name, dict(e.attributes or {})) for e in server.events] == [("cache.miss", {"key": "k"})]
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "litestar_omnii_obs"
    assert server.resource.attributes["service.name"] == "unknown_service"  # the app's resource: the default name
    assert server.start_time is not None
    assert server.end_time is not None
    assert server.start_time <= server.end_time
    server_context = server.get_span_context()
    assert server_context is not None
    for child in ("db", "user-span"):
        assert spans[child].parent is not None
        assert spans[child].parent.span_id == server_context.span_id
        assert spans[child].get_span_context().trace_id == server_context.trace_id  # type: ignore[union-attr]


def test_a_failure_is_recorded_like_the_sdk_does(obs_capture: ObservabilityCapture) -> None:
    run("/fail")
    [server] = [span for span in obs_capture.spans if span.kind is SpanKind.SERVER]
    assert server.attributes is not None
    assert server.attributes["error.type"] == "ValueError"
    assert server.status.status_code is StatusCode.OK  # the handler's OK stays
    [event] = server.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "nope"
    assert "Traceback" in str(event.attributes["exception.stacktrace"])


class _Keep(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def test_an_ended_span_takes_nothing_more_and_ends_once() -> None:
    keep = _Keep()
    spans = ServerSpans([keep], Resource({"service.name": "s"}), None)
    span = spans.start("GET /x", 1, 2, None, {"a": 1})
    assert span.is_recording()
    span.end()
    span.end()
    span.set_attribute("late", True)
    span.add_event("late")
    assert not span.is_recording()
    [readable] = keep.ended
    assert dict(readable.attributes or {}) == {"a": 1}
    assert readable.events == ()
    assert readable.get_span_context().trace_flags.sampled  # type: ignore[union-attr]


class _AppProcessor(SpanProcessor):
    """What an app might add to the plugin's provider: it stamps each span as it starts."""

    def __init__(self) -> None:
        self.parents: list[int] = []
        self.ended: list[str] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.parents.append(trace.get_current_span(parent_context).get_span_context().span_id)
        span.set_attribute("app.stamped", True)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.name)


def test_a_processor_the_app_adds_once_running_sees_each_server_span_start_and_end(
    obs_capture: ObservabilityCapture,
) -> None:
    plugin = ObservabilityPlugin(ObservabilityConfig(metrics=MetricsConfig(sink="off")))
    with TestClient(Litestar(route_handlers=[work], plugins=[plugin])) as client:
        provider = plugin.tracer_provider
        assert isinstance(provider, TracerProvider)
        added = _AppProcessor()
        provider.add_span_processor(added)
        client.get("/work", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert added.ended == ["db", "user-span", "GET /work (renamed)"]
    [server] = [span for span in obs_capture.spans if span.kind is SpanKind.SERVER]
    server_id = server.context.span_id  # type: ignore[union-attr]
    assert added.parents == [0xB7AD6B7169203331, server_id, server_id]  # in the caller's context, then in its own
    assert server.attributes is not None
    assert server.attributes["app.stamped"] is True  # what it set on start is exported


def test_a_processor_added_where_no_span_is_recorded_is_told_so_once(obs_log: list[logging.LogRecord]) -> None:
    plugin = ObservabilityPlugin(ObservabilityConfig(metrics=MetricsConfig(sink="off")))  # no exporter: no span
    with TestClient(Litestar(route_handlers=[plain, rated], plugins=[plugin])) as client:
        provider = plugin.tracer_provider
        assert isinstance(provider, TracerProvider)
        added = _AppProcessor()
        provider.add_span_processor(added)
        provider.add_span_processor(_AppProcessor())
        assert client.get("/plain").status_code == 200
        assert client.get("/rated").headers["x-request-id"]  # a route's own rate records nothing either
    assert (added.parents, added.ended) == ([], [])  # no span started that would never end
    [told] = [r.getMessage() for r in obs_log if "span processor was added" in r.getMessage()]
    assert "records no span" in told
    assert "opentelemetry.trace.set_tracer_provider" in told


@pytest.mark.obs_capture(sampling="app")
def test_a_kept_span_reaches_a_processor_the_app_added_in_the_callers_context(
    obs_capture: ObservabilityCapture,
) -> None:
    # always_off drops the request; its 500 keeps the server span, started only as the request ends.
    config = ObservabilityConfig(metrics=MetricsConfig(sink="off"), tracing=TracingConfig(sampler="always_off"))
    plugin = ObservabilityPlugin(config)
    with TestClient(Litestar(route_handlers=[fail], plugins=[plugin])) as client:
        provider = plugin.tracer_provider
        assert isinstance(provider, TracerProvider)
        added = _AppProcessor()
        provider.add_span_processor(added)
        caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert client.get("/fail", headers={"traceparent": caller}).status_code == 500
    assert (added.parents, added.ended) == ([0xB7AD6B7169203331], ["GET /fail"])
    [kept] = obs_capture.spans
    assert kept.attributes is not None
    assert (kept.attributes["omnii.kept"], kept.attributes["app.stamped"]) == ("status", True)
