"""One request and its trace (exchange.py): its ids, the caller's trace it joins, the span it ends.

Driven through a real app with the package's pytest plugin (``obs_capture``) catching the
spans; ``decode_headers`` is called directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient
from opentelemetry import baggage, trace
from opentelemetry.trace import SpanKind, StatusCode

from litestar_omnii_obs import MetricsConfig, ObservabilityConfig, ObservabilityPlugin, TracingConfig
from litestar_omnii_obs._internal.exchange import decode_headers
from litestar_omnii_obs.testing import ObservabilityCapture

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@get("/items/{item_id:int}")
async def item(item_id: FromPath[int]) -> dict[str, Any]:
    """What the handler sees of its request's span and the caller's baggage."""
    context = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "recording": trace.get_current_span().is_recording(),
        "tenant": baggage.get_baggage("tenant"),
    }


@get("/crash")
async def crash() -> None:
    raise RuntimeError("handler bug")


def client_for(**tracing: Any) -> TestClient[Litestar]:
    config = ObservabilityConfig(metrics=MetricsConfig(sink="off"), tracing=TracingConfig(**tracing))
    return TestClient(Litestar(route_handlers=[item, crash], plugins=[ObservabilityPlugin(config)]))


def test_a_request_without_trace_headers_starts_a_trace_named_by_its_x_request_id(
    obs_capture: ObservabilityCapture,
) -> None:
    with client_for() as client:
        response = client.get("/items/7")
    seen = response.json()
    span = obs_capture.span("GET /items/{item_id}")
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert span.context is not None
    assert response.headers["x-request-id"] == seen["trace_id"] == f"{span.context.trace_id:032x}"
    assert seen["span_id"] == f"{span.context.span_id:016x}"  # the handler ran under the request's span
    assert seen["recording"] is True


def test_a_caller_with_trace_headers_is_joined_with_its_state_and_baggage(obs_capture: ObservabilityCapture) -> None:
    headers = {
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        "tracestate": "vendor=kept",
        "baggage": "tenant=acme",
    }
    with client_for() as client:
        response = client.get("/items/7", headers=headers)
    span = obs_capture.span("GET /items/{item_id}")
    assert span.context is not None
    assert span.parent is not None
    assert response.headers["x-request-id"] == CALLER_TRACE == f"{span.context.trace_id:032x}"
    assert (f"{span.parent.span_id:016x}", span.parent.is_remote) == (CALLER_SPAN, True)
    assert span.context.trace_state.get("vendor") == "kept"
    assert response.json()["tenant"] == "acme"  # the caller's context stays current under the span


@pytest.mark.parametrize(
    "traceparent",
    ["00-zzzz-not-valid-01", f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-{'0' * 16}-01", ""],
)
def test_trace_headers_that_name_no_valid_trace_start_a_fresh_one(
    obs_capture: ObservabilityCapture, traceparent: str
) -> None:
    with client_for() as client:
        response = client.get("/items/7", headers={"traceparent": traceparent})
    assert response.status_code == 200
    span = obs_capture.span("GET /items/{item_id}")
    assert span.parent is None
    assert span.context is not None
    assert response.headers["x-request-id"] == f"{span.context.trace_id:032x}" != CALLER_TRACE
    assert span.context.trace_id != 0


@pytest.mark.obs_capture(sampling="app")
@pytest.mark.parametrize("traceparent", [None, f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"])
def test_a_dropped_request_keeps_its_ids_and_records_nothing(
    obs_capture: ObservabilityCapture, traceparent: str | None
) -> None:
    headers = {} if traceparent is None else {"traceparent": traceparent}
    with client_for(sampler="parentbased_always_off") as client:
        response = client.get("/items/7", headers=headers)
    seen = response.json()
    assert obs_capture.spans == ()
    assert seen["recording"] is False
    assert response.headers["x-request-id"] == seen["trace_id"]  # the ids exist for logs and lines
    assert seen["span_id"] != "0" * 16
    if traceparent is not None:
        assert seen["trace_id"] == CALLER_TRACE


def test_a_server_error_ends_the_span_with_its_status_and_exception(obs_capture: ObservabilityCapture) -> None:
    with client_for() as client:
        response = client.get("/crash")
    assert response.status_code == 500
    span = obs_capture.span("GET /crash")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert (span.attributes["http.response.status_code"], span.attributes["error.type"]) == (500, "RuntimeError")
    assert [event.name for event in span.events] == ["exception"]
    assert span.end_time is not None


def test_a_request_no_route_matched_is_traced_as_a_client_error_not_a_span_error(
    obs_capture: ObservabilityCapture,
) -> None:
    with client_for() as client:
        response = client.get("/items/not-a-number")
    assert response.status_code == 404
    span = obs_capture.span("GET")  # no route: the method alone names it
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert "error.type" not in span.attributes
    assert span.context is not None
    assert response.headers["x-request-id"] == f"{span.context.trace_id:032x}"


def test_headers_are_decoded_as_latin_1_and_only_those_asked_for() -> None:
    raw = [(b"traceparent", b"00-abc"), (b"user-agent", "caf\xe9".encode("latin-1")), (b"x-a", b"1"), (b"x-a", b"2")]
    assert decode_headers(raw) == {"traceparent": "00-abc", "user-agent": "caf\xe9", "x-a": "2"}
    assert decode_headers(raw, frozenset({b"traceparent", b"baggage"})) == {"traceparent": "00-abc"}
    assert decode_headers([], frozenset({b"traceparent"})) == {}
