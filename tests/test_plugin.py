"""``ObservabilityPlugin.on_app_init`` adds to the app's configuration and replaces nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from litestar.testing import AsyncTestClient, TestClient
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from litestar_omnii_obs import ConfigError, MetricsConfig, ObservabilityConfig, ObservabilityPlugin
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.conftest import read_lines
from tests.peers.sentry_ingest import SentryIngest


@get("/ping")
async def ping() -> str:
    return "pong"


def test_plugin_is_hashable_and_keeps_its_config() -> None:
    config = ObservabilityConfig(environment="staging")
    plugin = ObservabilityPlugin(config)
    assert plugin.config is config
    assert len({plugin, ObservabilityPlugin(config)}) == 2


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No variable the package reads is set (whatever the shell running the tests has)."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SENTRY_", "OMNII_OBS_", "APP_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_plugin_without_a_config_reads_the_environment(clean_environ: pytest.MonkeyPatch) -> None:
    assert ObservabilityPlugin().config == ObservabilityConfig()
    with SentryIngest() as ingest:
        clean_environ.setenv("SENTRY_DSN", ingest.dsn)
        clean_environ.setenv("APP_ENV", "production")
        clean_environ.setenv("OTEL_SERVICE_NAME", "x")
        config = ObservabilityPlugin().config
    assert (config.sentry.dsn, config.environment, config.service_name) == (ingest.dsn, "production", "x")
    assert config == ObservabilityConfig.from_env()
    # A config passed in is used as it is: the defaults stay the defaults.
    assert ObservabilityPlugin(ObservabilityConfig()).config == ObservabilityConfig()


def test_plugin_without_a_config_rejects_an_invalid_environment(clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    with pytest.raises(ConfigError, match="OTEL_METRICS_EXPORTER='prometheus': otlp or none"):
        ObservabilityPlugin()


def test_a_captured_app_sends_nothing_to_the_sentry_dsn_of_the_environment(
    clean_environ: pytest.MonkeyPatch, obs_capture: ObservabilityCapture
) -> None:
    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    with SentryIngest() as ingest:
        clean_environ.setenv("SENTRY_DSN", ingest.dsn)
        clean_environ.setenv("OMNII_OBS_METRICS_SINK", "off")
        with TestClient(Litestar(route_handlers=[ping, boom], plugins=[ObservabilityPlugin()])) as client:
            assert client.get("/ping").status_code == 200
            assert client.get("/boom").status_code == 500
        assert ingest.requests_received == 0  # neither the event nor the spans (Sentry's OTLP endpoint)
    assert len(obs_capture.sentry_events) == 1
    assert {span.name for span in obs_capture.spans} == {"GET /ping", "GET /boom"}


@pytest.mark.parametrize("environment", ["prod", "Production"])
def test_an_unknown_app_env_is_warned_about_once_at_start_up(
    obs_log: list[logging.LogRecord], environment: str
) -> None:
    config = ObservabilityConfig.from_env({"APP_ENV": environment, "OMNII_OBS_METRICS_SINK": "off"})
    with TestClient(Litestar(route_handlers=[ping], plugins=[ObservabilityPlugin(config)])) as client:
        client.get("/ping")
        client.get("/ping")
    warnings = [r.getMessage() for r in obs_log if "APP_ENV" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"APP_ENV={environment!r} is not one of production, development, test, staging; "
        "it is treated as a non-production environment: traces are sampled at 100% by default"
    )
    assert [r.levelno for r in obs_log if "APP_ENV" in r.getMessage()] == [logging.WARNING]


@pytest.mark.parametrize("environment", ["production", "development", "test", "staging"])
def test_a_known_app_env_is_not_warned_about(obs_log: list[logging.LogRecord], environment: str) -> None:
    config = ObservabilityConfig.from_env({"APP_ENV": environment, "OMNII_OBS_METRICS_SINK": "off"})
    with TestClient(Litestar(route_handlers=[ping], plugins=[ObservabilityPlugin(config)])):
        pass
    assert not [r for r in obs_log if "APP_ENV" in r.getMessage()]


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


@pytest.mark.parametrize(("variable", "frozen"), [(None, True), ("false", False)])
def test_the_first_start_up_freezes_what_exists_out_of_the_collectors_reach(variable: str | None, frozen: bool) -> None:
    # In a fresh process: the freeze is once per process, and the test process's own collector is left alone.
    script = (
        "import gc\n"
        "from litestar import Litestar, get\n"
        "from litestar.testing import TestClient\n"
        "from litestar_omnii_obs import ObservabilityPlugin\n"
        "@get('/')\n"
        "async def index() -> str:\n"
        "    return 'ok'\n"
        "before = gc.get_freeze_count()\n"
        "with TestClient(Litestar([index], plugins=[ObservabilityPlugin()])) as client:\n"
        "    assert client.get('/').text == 'ok'\n"
        "print(before, gc.get_freeze_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNII_OBS_", "OTEL_", "SENTRY_"))}
    if variable is not None:
        env["OMNII_OBS_FREEZE_GC"] = variable
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split()[-2:])
    assert before == 0
    assert (after > 10_000) is frozen  # the modules and the app, not a handful of objects
