"""``ObservabilityPlugin.on_app_init`` adds to the app's configuration and replaces nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from litestar_omnii_obs import MetricsConfig, ObservabilityConfig, ObservabilityPlugin
from tests.conftest import read_lines


@get("/ping")
async def ping() -> str:
    return "pong"


def test_plugin_is_hashable_and_keeps_its_config() -> None:
    config = ObservabilityConfig(environment="staging")
    plugin = ObservabilityPlugin(config)
    assert plugin.config is config
    assert len({plugin, ObservabilityPlugin(config)}) == 2
    assert ObservabilityPlugin().config == ObservabilityConfig()


@pytest.mark.asyncio
async def test_user_lifespan_middleware_and_hooks_are_kept_and_ours_are_placed_first(sink: Path) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def user_lifespan(app: Litestar) -> AsyncIterator[None]:
        events.append("user-start")
        yield
        events.append("user-stop")

    def user_middleware(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            events.append("user-middleware")
            await app(scope, receive, send)

        return middleware

    async def user_before_send(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            events.append("user-before-send")

    async def user_after_exception(exc: BaseException, scope: Scope) -> None:
        events.append(f"user-after-exception:{type(exc).__name__}")

    plugin = ObservabilityPlugin(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink))))
    app = Litestar(
        route_handlers=[ping],
        plugins=[plugin],
        lifespan=[user_lifespan],
        middleware=[DefineMiddleware(user_middleware)],
        before_send=[user_before_send],
        after_exception=[user_after_exception],
    )
    assert app.before_request is None
    assert app.after_response is None
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/ping")).text == "pong"
        assert (await client.get("/missing")).status_code == 404
    assert events == [
        "user-start",
        "user-middleware",
        "user-before-send",
        "user-after-exception:NotFoundException",
        "user-before-send",
        "user-stop",
    ]
    assert [(r["route"], r["status"]) for r in read_lines(sink)] == [("/ping", 200), ("UNMATCHED", 404)]


def test_lifespan_is_first_so_it_starts_first_and_stops_last(sink: Path) -> None:
    @asynccontextmanager
    async def user_lifespan(app: Litestar) -> AsyncIterator[None]:
        yield

    plugin = ObservabilityPlugin(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink))))
    app = Litestar(route_handlers=[ping], plugins=[plugin], lifespan=[user_lifespan])
    managers = app._lifespan_managers
    assert managers[0] == plugin.lifespan
    assert managers[1] is user_lifespan


@pytest.mark.asyncio
async def test_latency_can_be_turned_off(sink: Path) -> None:
    from litestar_omnii_obs import LatencyConfig

    plugin = ObservabilityPlugin(
        ObservabilityConfig(metrics=MetricsConfig(sink=str(sink)), latency=LatencyConfig(enabled=False))
    )
    app = Litestar(route_handlers=[ping], plugins=[plugin])
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/ping")).text == "pong"
    assert read_lines(sink) == []
