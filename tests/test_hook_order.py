"""Hook order: sentry-sdk's processors, our scrubbing, the app's ``before_send``, our last scrub pass.

And the app's own Litestar hooks keep running beside the plugin's. Every test runs a real
server and reads what the Sentry ingest server received.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk
from litestar import Litestar, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from litestar_omnii_obs import (
    ConfigError,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
    capture_error,
)
from tests.conftest import serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

BEARER = "bearer-secret-7001"
ADDED = "added-secret-7002"


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with SentryIngest() as peer:
        yield peer


@pytest.fixture
def fresh_sentry() -> Iterator[None]:
    """No client left behind: a hook given to ``sentry_sdk.init`` here must not reach later tests' apps."""
    yield
    sentry_sdk.get_global_scope().set_client(None)


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom happened")


@get("/quiet")
async def quiet() -> None:
    raise LookupError("nobody needs to know")


@get("/manual")
async def manual() -> dict[str, str | None]:
    return {"id": capture_error(KeyError("by hand"), tags={"area": "billing"})}


@get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


def config_for(dsn: str, sink: Path, **sentry: Any) -> ObservabilityConfig:
    tracing = sentry.pop("tracing", TracingConfig())
    return ObservabilityConfig(
        environment="test",
        metrics=MetricsConfig(sink=str(sink)),
        sentry=SentryConfig(dsn=dsn, flush_timeout=3.0, **sentry),
        tracing=tracing,
    )


def app_with(config: ObservabilityConfig, **kwargs: Any) -> Litestar:
    return Litestar(route_handlers=[boom, quiet, manual, ok], plugins=[ObservabilityPlugin(config)], **kwargs)


class Recorder:
    """A user ``before_send``: remembers what it saw, adds to the event, drops ``LookupError``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, event: Any, hint: Any) -> Any:
        self.seen.append(
            {
                "authorization": event["request"]["headers"].get("authorization") if "request" in event else None,
                "transaction": event.get("transaction"),
                "exc_type": type(hint["exc_info"][1]).__name__ if "exc_info" in hint else None,
            }
        )
        if "exc_info" in hint and isinstance(hint["exc_info"][1], LookupError):
            return None  # the app's decision: never sent
        event.setdefault("tags", {})["team"] = "payments"
        event.setdefault("extra", {})["api_token"] = ADDED  # a secret the hook itself adds
        event["request"]["headers"]["X-Auth-Token"] = ADDED
        event["request"]["query_string"] = f"password={ADDED}&page=2"
        return event


def test_the_apps_hook_runs_after_our_scrubbing_and_before_the_last_pass(ingest: SentryIngest, sink: Path) -> None:
    hook = Recorder()
    app = app_with(config_for(ingest.dsn, sink, before_send=hook))
    with serve(app) as url:
        response = httpx.get(url + "/boom", headers={"Authorization": f"Bearer {BEARER}"})
    assert response.status_code == 500
    [event] = ingest.events()
    # It ran after sentry-sdk's processors (the transaction name, the exception in the hint)
    # and after our scrubbing (the header it saw was already filtered)...
    assert hook.seen == [{"authorization": "[Filtered]", "transaction": "GET /boom", "exc_type": "RuntimeError"}]
    # ...what it added that is harmless arrives, what looks secret was scrubbed by the last pass.
    assert event["tags"]["team"] == "payments"
    assert event["extra"]["api_token"] == "[Filtered]"
    assert event["request"]["headers"]["X-Auth-Token"] == "[Filtered]"
    assert event["request"]["query_string"] == "password=%5BFiltered%5D&page=2"
    sent = b"".join(ingest.raw_bodies())
    assert ADDED.encode() not in sent
    assert BEARER.encode() not in sent


def test_an_event_the_apps_hook_drops_is_not_sent_and_not_reported_lost(
    ingest: SentryIngest, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    app = app_with(config_for(ingest.dsn, sink, before_send=Recorder()))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert [client.get(p).status_code for p in ("/quiet", "/boom", "/quiet")] == [500, 500, 500]
    assert [e["exception"]["values"][0]["type"] for e in ingest.events()] == ["RuntimeError"]
    assert not [r for r in obs_log if "lost" in r.getMessage()]


def test_a_failing_hook_is_logged_once_and_the_event_still_goes_out_scrubbed(
    ingest: SentryIngest, sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    def broken(event: Any, hint: Any) -> Any:
        event["extra"]["session_key"] = ADDED  # written before it fails: scrubbed all the same
        raise ValueError("bug in the filter")

    def not_an_event(event: Any, hint: Any) -> Any:
        return True

    for hook, problem in ((broken, "raised"), (not_an_event, "returned bool")):
        ingest.clear()
        obs_log.clear()
        app = app_with(config_for(ingest.dsn, sink, before_send=hook))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            assert [client.get("/boom").status_code for _ in range(3)] == [500, 500, 500]
        events = ingest.wait_for_events(3)
        assert [e["exception"]["values"][0]["value"] for e in events] == ["boom happened"] * 3
        assert ADDED.encode() not in b"".join(ingest.raw_bodies())
        failures = [r for r in obs_log if r.name == "litestar_omnii_obs.sentry_hooks"]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        assert failures[0].levelno == logging.ERROR
        assert problem in failures[0].getMessage()
        assert "sent as the hook left it" in failures[0].getMessage()


def test_capture_error_goes_through_the_apps_hook_too(ingest: SentryIngest, sink: Path) -> None:
    def hook(event: Any, hint: Any) -> Any:
        event["tags"]["seen_by"] = "app"
        event["tags"]["session_token"] = ADDED
        return event

    app = app_with(config_for(ingest.dsn, sink, before_send=hook))
    with serve(app) as url:
        event_id = httpx.get(url + "/manual").json()["id"]
    [event] = ingest.events()
    assert event["event_id"] == event_id
    assert (event["tags"]["area"], event["tags"]["seen_by"]) == ("billing", "app")
    assert event["tags"]["session_token"] == "[Filtered]"


def test_a_hook_given_to_sentry_init_before_the_app_is_kept(
    ingest: SentryIngest, sink: Path, fresh_sentry: None
) -> None:
    hook = Recorder()
    sentry_sdk.init(dsn=ingest.dsn, before_send=hook)  # the app set Sentry up itself, then added the plugin
    for _ in range(2):  # a second start in the same process (tests, reloads) keeps it as well
        app = app_with(config_for(ingest.dsn, sink))
        with serve(app) as url:
            assert httpx.get(url + "/boom").status_code == 500
    events = ingest.wait_for_events(2)
    assert [e["tags"]["team"] for e in events] == ["payments", "payments"]
    assert len(hook.seen) == 2


def test_the_configured_hook_wins_over_the_one_given_to_sentry_init(
    ingest: SentryIngest, sink: Path, fresh_sentry: None, obs_log: list[logging.LogRecord]
) -> None:
    earlier = Recorder()
    sentry_sdk.init(dsn=ingest.dsn, before_send=earlier)

    def configured(event: Any, hint: Any) -> Any:
        event["tags"]["hook"] = "configured"
        return event

    app = app_with(config_for(ingest.dsn, sink, before_send=configured))
    with serve(app) as url:
        httpx.get(url + "/boom")
    [event] = ingest.events()
    assert event["tags"]["hook"] == "configured"
    assert earlier.seen == []
    assert [r.getMessage() for r in obs_log if "replaces" in r.getMessage()] == [
        "SentryConfig.before_send replaces the before_send given to sentry_sdk.init"
    ]


def test_before_send_transaction_is_chained_the_same_way(ingest: SentryIngest, sink: Path) -> None:
    def transactions(event: Any, hint: Any) -> Any:
        if event.get("transaction") == "GET /ok":
            return None  # not worth a transaction
        event.setdefault("extra", {})["db_password"] = ADDED
        event.setdefault("tags", {})["kind"] = "kept"
        return event

    with OtlpHttpReceiver() as receiver:
        tracing = TracingConfig(otlp_endpoint=receiver.endpoint, shutdown_timeout=3.0)
        config = config_for(
            ingest.dsn,
            sink,
            traces="sdk",
            traces_sample_rate=1.0,
            before_send_transaction=transactions,
            tracing=tracing,
        )
        with serve(app_with(config)) as url, httpx.Client(base_url=url) as client:
            client.get("/ok")
            client.get("/manual")
        [transaction] = ingest.wait_for_transactions(1)
        assert len([s for s in receiver.wait_for_spans(2) if s.kind == "server"]) == 2  # the collector gets both
    assert transaction["transaction"] == "GET /manual"
    assert transaction["tags"]["kind"] == "kept"
    assert transaction["extra"]["db_password"] == "[Filtered]"
    assert ADDED.encode() not in b"".join(ingest.raw_bodies())


def test_the_apps_own_litestar_hooks_keep_running(ingest: SentryIngest, sink: Path) -> None:
    seen: list[str] = []

    async def after_exception(exc: BaseException, scope: Scope) -> None:
        seen.append(f"after_exception:{type(exc).__name__}")

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-app-hook", b"yes")]  # type: ignore[typeddict-unknown-key]

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(f"middleware:{scope['path']}")
            await app(scope, receive, send)

        return wrapped

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        seen.append("lifespan:start")
        yield
        seen.append("lifespan:stop")

    def sentry_hook(event: Any, hint: Any) -> Any:
        seen.append("sentry_before_send")
        return event

    app = app_with(
        config_for(ingest.dsn, sink, before_send=sentry_hook),
        after_exception=[after_exception],
        before_send=[before_send],
        middleware=[middleware],
        lifespan=[lifespan],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        failed = client.get("/boom")
        fine = client.get("/ok")
    for response in (failed, fine):
        assert response.headers["x-app-hook"] == "yes"  # the app's before_send
        assert len(response.headers["x-request-id"]) == 32  # and ours
    assert (failed.status_code, fine.status_code) == (500, 200)
    [event] = ingest.events()
    assert event["exception"]["values"][0]["type"] == "RuntimeError"
    assert seen == [
        "lifespan:start",
        "middleware:/boom",
        "after_exception:RuntimeError",
        "sentry_before_send",
        "middleware:/ok",
        "lifespan:stop",
    ]


def test_the_hook_fields_are_typed_checked_and_printable() -> None:
    def hook(event: Any, hint: Any) -> Any:
        return event

    config = SentryConfig(dsn="https://secretkey0001@o1.ingest.example.invalid/42", before_send=hook)
    shown = repr(config)
    assert "before_send=<function" in shown
    assert "secretkey0001" not in shown
    with pytest.raises(ConfigError) as info:
        SentryConfig(before_send="my_module.hook")  # type: ignore[arg-type]
    assert info.value.problems[0][0] == "before_send"
    # A function cannot come from the environment: no variable sets it.
    assert ObservabilityConfig.from_env({"OMNII_OBS_SENTRY_BEFORE_SEND": "x"}).sentry.before_send is None
