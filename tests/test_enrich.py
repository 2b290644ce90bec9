"""``ObservabilityConfig.enrich``: attributes from the authenticated request on the span, the Sentry event, the line.

The app authenticates in its own middleware (inside the plugin's) and guards a route; the hook
sees what they set. Real uvicorn, a real OTLP gRPC receiver and a real Sentry ingest on 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace

from litestar_omnii_obs import (
    LatencyConfig,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
)
from tests.conftest import read_lines, serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest


def authenticate(app: ASGIApp) -> ASGIApp:
    """The app's authentication: the caller's user from a header (runs inside the plugin's middleware)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"x-user" and value:
                scope["user"] = {"id": value.decode(), "tenant": "acme"}
        await app(scope, receive, send)

    return middleware


def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not connection.scope.get("user"):
        raise NotAuthorizedException()


@get("/me", guards=[signed_in])
async def me() -> str:
    trace.get_current_span().set_attribute("plan", "set-by-the-app")
    return "me"


@get("/crash", guards=[signed_in])
async def crash() -> None:
    raise RuntimeError("kaput")


def enrich(request: Request[Any, Any, Any]) -> Mapping[str, str | int | float | bool]:
    user = request.scope.get("user") or {}
    return {"user.id": user.get("id", "anonymous"), "tenant": user.get("tenant", "none"), "plan": "pro", "seats": 3}


def _config(sink: Path, endpoint: str, dsn: str | None = None, **fields: Any) -> ObservabilityConfig:
    return ObservabilityConfig(
        environment="test",
        metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
        latency=LatencyConfig(line_attributes=("tenant", "seats")),
        sentry=SentryConfig(dsn=dsn, send_default_pii=True),
        tracing=TracingConfig(otlp_endpoint=endpoint, shutdown_timeout=3.0),
        **{"enrich": enrich, **fields},
    )


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


def test_enrich_sees_the_authenticated_user_and_never_overwrites_the_app(
    receiver: OtlpHttpReceiver, sink: Path
) -> None:
    with SentryIngest() as ingest:
        app = Litestar(
            [me, crash],
            middleware=[authenticate],
            plugins=[ObservabilityPlugin(_config(sink, receiver.endpoint, ingest.dsn))],
        )
        with serve(app) as url, httpx.Client(base_url=url, headers={"X-User": "u-42"}) as client:
            assert client.get("/me").status_code == 200
            assert client.get("/crash").status_code == 500
            refused = client.get("/me", headers={"X-User": ""})
        [event] = ingest.events()
    assert refused.status_code == 401
    spans = receiver.spans()
    by_status = {s.attributes["http.response.status_code"]: s for s in spans}
    ok, failed, unauthorized = by_status[200], by_status[500], by_status[401]
    assert (ok.attributes["user.id"], ok.attributes["tenant"], ok.attributes["seats"]) == ("u-42", "acme", 3)
    assert ok.attributes["plan"] == "set-by-the-app"  # the app's own value stays
    assert failed.attributes["plan"] == "pro"
    assert (unauthorized.attributes["user.id"], unauthorized.attributes["tenant"]) == ("anonymous", "none")
    assert event["tags"]["tenant"] == "acme"
    assert event["tags"]["seats"] == "3"
    assert event["user"] == {"id": "u-42"}
    # Only the declared keys go on the line.
    lines = [line for line in read_lines(sink) if line["metric"] == "api_latency"]
    assert [(line["status"], line.get("tenant"), line.get("seats"), "plan" in line) for line in lines] == [
        (200, "acme", 3, False),
        (500, "acme", 3, False),
        (401, "none", 3, False),
    ]


def test_enrich_that_raises_is_logged_once_and_never_reaches_the_response(
    receiver: OtlpHttpReceiver, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    def broken(request: Request[Any, Any, Any]) -> Mapping[str, str]:
        raise KeyError("tenant")

    app = Litestar(
        [me], middleware=[authenticate], plugins=[ObservabilityPlugin(_config(sink, receiver.endpoint, enrich=broken))]
    )
    with serve(app) as url, httpx.Client(base_url=url, headers={"X-User": "u-1"}) as client:
        statuses = [client.get("/me").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert all("tenant" not in s.attributes for s in receiver.spans())
    assert len([line for line in read_lines(sink) if line["metric"] == "api_latency"]) == 3
    failures = [r for r in obs_log if "enrich raised" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
