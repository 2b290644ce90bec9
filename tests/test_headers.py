"""Header capture: what a collector receives when the standard OpenTelemetry header variables are set.

Real uvicorn server, real OTLP receiver; the spans are read as the collector decoded them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Response, get
from litestar.datastructures import Cookie
from litestar.params import FromPath

from litestar_omnii_obs import ConfigError, MetricsConfig, ObservabilityConfig, ObservabilityPlugin, TracingConfig
from tests.conftest import serve
from tests.peers.decode import ReceivedSpan
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
SANITIZE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"

BEARER = "bearer-secret-4711"
SESSION = "session-secret-4712"
INTERNAL = "internal-secret-4713"


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


@get("/orders/{order_id:int}")
async def order(order_id: FromPath[int]) -> Response[dict[str, int]]:
    return Response(
        {"id": order_id},
        headers={"X-Served-By": "node-1", "X-Internal-Ref": INTERNAL, "Cache-Control": "no-store"},
        cookies=[Cookie(key="sid", value=SESSION)],
    )


def env_config(endpoint: str, sink: Path, **variables: str) -> ObservabilityConfig:
    return ObservabilityConfig.from_env(
        {
            "APP_ENV": "test",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OMNII_OBS_METRICS_SINK": str(sink),
            "OMNII_OBS_SHUTDOWN_TIMEOUT": "3",
            **variables,
        }
    )


def served_span(config: ObservabilityConfig, receiver: OtlpHttpReceiver, path: str, headers: Any) -> ReceivedSpan:
    app = Litestar(route_handlers=[order], plugins=[ObservabilityPlugin(config)])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get(path, headers=headers)
    [span] = [s for s in receiver.wait_for_spans(1) if s.kind == "server"]
    assert span.trace_id == response.headers["x-request-id"]
    return span


def captured(span: ReceivedSpan) -> dict[str, Any]:
    return {k: v for k, v in span.attributes.items() if k.startswith(("http.request.header.", "http.response.header."))}


CALLER_HEADERS = [
    ("X-Tenant", "acme"),
    ("X-Trace-Hint", "first"),
    ("X-Trace-Hint", "second"),  # a repeated header keeps both values
    ("Authorization", f"Bearer {BEARER}"),
    ("Cookie", f"sid={SESSION}"),
    ("X-Forwarded-Host", "shop.example"),
    ("X-Not-Asked-For", "nope"),
]


def test_request_and_response_headers_by_the_standard_variables(receiver: OtlpHttpReceiver, sink: Path) -> None:
    config = env_config(
        receiver.endpoint,
        sink,
        **{
            REQUEST: "X-TENANT, x-trace-.*, authorization,cookie , x-forwarded-host",
            RESPONSE: "x-served-by,x-internal-.*,set-cookie,content-type",
            SANITIZE: "forwarded, INTERNAL",
        },
    )
    span = served_span(config, receiver, "/orders/7", CALLER_HEADERS)
    assert captured(span) == {
        "http.request.header.x-tenant": ["acme"],
        "http.request.header.x-trace-hint": ["first", "second"],
        "http.request.header.authorization": ["[REDACTED]"],  # secret-looking: always
        "http.request.header.cookie": ["[REDACTED]"],
        "http.request.header.x-forwarded-host": ["[REDACTED]"],  # SANITIZE_FIELDS: found anywhere in the name
        "http.response.header.x-served-by": ["node-1"],
        "http.response.header.x-internal-ref": ["[REDACTED]"],
        "http.response.header.set-cookie": ["[REDACTED]"],
        "http.response.header.content-type": ["application/json"],
    }
    everything = repr(receiver.spans())
    for secret in (BEARER, SESSION, INTERNAL):
        assert secret not in everything


def test_config_fields_do_the_same_in_code(receiver: OtlpHttpReceiver, sink: Path) -> None:
    config = ObservabilityConfig(
        environment="test",
        metrics=MetricsConfig(sink=str(sink)),
        tracing=TracingConfig(
            otlp_endpoint=receiver.endpoint,
            shutdown_timeout=3.0,
            capture_request_headers=("x-tenant",),
            capture_response_headers=("cache-.*",),
        ),
    )
    span = served_span(config, receiver, "/orders/1", CALLER_HEADERS)
    assert captured(span) == {
        "http.request.header.x-tenant": ["acme"],
        "http.response.header.cache-control": ["no-store"],
    }


def test_a_request_no_route_matched_has_its_headers_too(receiver: OtlpHttpReceiver, sink: Path) -> None:
    config = env_config(receiver.endpoint, sink, **{REQUEST: "x-tenant", RESPONSE: "content-type"})
    span = served_span(config, receiver, "/nowhere", [("X-Tenant", "acme")])
    assert span.attributes["http.response.status_code"] == 404
    assert captured(span) == {
        "http.request.header.x-tenant": ["acme"],
        "http.response.header.content-type": ["application/json"],
    }


def test_without_the_variables_no_header_is_captured(receiver: OtlpHttpReceiver, sink: Path) -> None:
    span = served_span(env_config(receiver.endpoint, sink), receiver, "/orders/7", CALLER_HEADERS)
    assert captured(span) == {}


def test_only_recorded_spans_carry_headers_and_dropped_requests_still_succeed(
    receiver: OtlpHttpReceiver, sink: Path
) -> None:
    config = env_config(
        receiver.endpoint,
        sink,
        **{REQUEST: "x-tenant", RESPONSE: "x-served-by", "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    )
    app = Litestar(route_handlers=[order], plugins=[ObservabilityPlugin(config)])
    sampled, dropped = "0af7651916cd43dd8448eb211c80319c", "1bf7651916cd43dd8448eb211c80319c"
    with serve(app) as url, httpx.Client(base_url=url, headers={"X-Tenant": "acme"}) as client:
        kept = client.get("/orders/1", headers={"traceparent": f"00-{sampled}-b7ad6b7169203331-01"})
        not_kept = client.get("/orders/2", headers={"traceparent": f"00-{dropped}-b7ad6b7169203331-00"})
    assert (kept.status_code, not_kept.status_code) == (200, 200)
    assert not_kept.headers["x-served-by"] == "node-1"
    [span] = [s for s in receiver.wait_for_spans(1) if s.kind == "server"]
    assert span.trace_id == sampled
    assert captured(span) == {
        "http.request.header.x-tenant": ["acme"],
        "http.response.header.x-served-by": ["node-1"],
    }
    assert dropped not in {s.trace_id for s in receiver.spans()}


def test_the_sdk_span_path_captures_the_same(receiver: OtlpHttpReceiver, sink: Path) -> None:
    """With sentry-sdk's span processor the server span is the OpenTelemetry SDK's own ``Span``."""
    with SentryIngest() as ingest:
        config = env_config(
            receiver.endpoint,
            sink,
            **{REQUEST: "x-tenant,authorization", RESPONSE: "x-served-by"},
            SENTRY_DSN=ingest.dsn,
            SENTRY_TRACES_SAMPLE_RATE="1.0",
            OMNII_OBS_SENTRY_TRACES="sdk",
            OMNII_OBS_SENTRY_FLUSH_TIMEOUT="3",
        )
        span = served_span(config, receiver, "/orders/3", CALLER_HEADERS)
        ingest.wait_for_transactions(1)
    assert captured(span) == {
        "http.request.header.x-tenant": ["acme"],
        "http.request.header.authorization": ["[REDACTED]"],
        "http.response.header.x-served-by": ["node-1"],
    }
    assert BEARER.encode() not in b"".join(ingest.raw_bodies())


@pytest.mark.parametrize("name", [REQUEST, RESPONSE, SANITIZE])
@pytest.mark.parametrize("value", ["x-(unclosed", " , ", "ok,[a-"])
def test_a_bad_variable_fails_at_start_up_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env({name: value})
    [(variable, shown, allowed)] = info.value.problems
    assert (variable, shown) == (name, value)
    assert "regular expressions" in allowed


@pytest.mark.parametrize("field", ["capture_request_headers", "capture_response_headers", "sanitize_headers"])
def test_a_bad_pattern_in_code_fails_naming_the_field(field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TracingConfig(**{field: ("x-ok", "x-(")})
    [(name, shown, allowed)] = info.value.problems
    assert (name, shown) == (field, "x-(")
    assert "regular expression" in allowed


def test_the_variables_show_in_the_config_and_its_repr() -> None:
    config = ObservabilityConfig.from_env({REQUEST: "x-tenant,x-.*", SANITIZE: "x-key"})
    assert config.tracing.capture_request_headers == ("x-tenant", "x-.*")
    assert config.tracing.sanitize_headers == ("x-key",)
    assert "capture_request_headers=('x-tenant', 'x-.*')" in repr(config)
