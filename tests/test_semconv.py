"""Span, metric and resource attributes checked against the OpenTelemetry semantic-conventions package."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    exception_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    service_attributes,
    telemetry_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.semconv.metrics import http_metrics

try:  # stable since semantic-conventions 0.57b0 (OpenTelemetry 1.36)
    from opentelemetry.semconv.attributes import deployment_attributes
except ImportError:  # the lowest supported OpenTelemetry: still incubating
    from opentelemetry.semconv._incubating.attributes import deployment_attributes  # type: ignore[no-redef]

from litestar_omnii_obs import ObservabilityConfig, ObservabilityPlugin, TracingConfig
from litestar_omnii_obs._internal.attributes import KNOWN_METHODS
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.peers.otlp_http_receiver import OtlpHttpReceiver


def _names(*modules: types.ModuleType) -> set[str]:
    return {
        value
        for module in modules
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and not name.endswith("_TEMPLATE")
    }


SPAN_ATTRIBUTES = _names(
    client_attributes,
    error_attributes,
    exception_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
RESOURCE_ATTRIBUTES = _names(service_attributes, deployment_attributes, telemetry_attributes)


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    return {"id": user_id}


@get("/fail")
async def fail() -> None:
    raise LookupError("not here")


def app(config: ObservabilityConfig | None = None) -> Litestar:
    return Litestar(route_handlers=[get_user, fail], plugins=[ObservabilityPlugin(config or ObservabilityConfig())])


def test_known_methods_are_the_conventions_methods() -> None:
    standard = {value.value for value in http_attributes.HttpRequestMethodValues}
    assert KNOWN_METHODS | {"_OTHER"} == standard


def test_server_span_attributes_are_semantic_conventions(obs_capture: ObservabilityCapture) -> None:
    with TestClient(app()) as client:
        client.get("/users/7?page=2&token=hunter2-secret", headers={"user-agent": "ua", "x-request-id": "r-1"})
        client.get("/fail")
        client.request("BREW", "/users/7")
    spans = {span.name: span for span in obs_capture.spans}
    assert set(spans) == {"GET /users/{user_id}", "GET /fail", "HTTP"}
    for span in spans.values():
        assert span.attributes is not None
        keys = set(span.attributes) - {"http.request.header.x-request-id"}
        assert keys <= SPAN_ATTRIBUTES, keys - SPAN_ATTRIBUTES
        assert span.attributes[http_attributes.HTTP_REQUEST_METHOD] in KNOWN_METHODS | {"_OTHER"}
        assert set(span.resource.attributes) <= RESOURCE_ATTRIBUTES, set(span.resource.attributes) - RESOURCE_ATTRIBUTES
    ok = spans["GET /users/{user_id}"].attributes
    assert ok is not None
    assert ok[url_attributes.URL_QUERY] == "page=2&token=%5BFiltered%5D"  # the Sentry denylist scrubs values
    assert ok[http_attributes.HTTP_ROUTE] == "/users/{user_id}"
    failed = spans["GET /fail"].attributes
    assert failed is not None
    assert failed[error_attributes.ERROR_TYPE] == "LookupError"
    other = spans["HTTP"].attributes
    assert other is not None
    assert other[http_attributes.HTTP_REQUEST_METHOD] == "_OTHER"
    assert other[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] == "BREW"


@pytest.mark.timeout(60)
def test_request_duration_points_are_semantic_conventions(tmp_path: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        config = ObservabilityConfig(tracing=TracingConfig(otlp_endpoint=receiver.endpoint, shutdown_timeout=3.0))
        with TestClient(app(config)) as client:
            client.get("/users/7")
            client.get("/fail")
        points = receiver.metric_points(http_metrics.HTTP_SERVER_REQUEST_DURATION)
    assert points
    for point in points:
        assert set(point.attributes) <= SPAN_ATTRIBUTES
        assert point.attributes[url_attributes.URL_SCHEME] == "http"
    by_status = {point.attributes[http_attributes.HTTP_RESPONSE_STATUS_CODE]: point for point in points}
    assert error_attributes.ERROR_TYPE not in by_status[200].attributes
    assert by_status[500].attributes[error_attributes.ERROR_TYPE] == "LookupError"
