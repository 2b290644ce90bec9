"""The request hooks (hooks.py): what the client waits for and what happens after.

Driven as an ASGI server drives the app (Litestar's own lifespan, a ``send`` that records
every message), so the order of what the client receives and what the plugin does is seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, get

from litestar_omnii_obs import LatencyConfig, MetricsConfig, ObservabilityConfig, ObservabilityPlugin
from tests.conftest import read_lines


@get("/crash")
async def crash() -> None:
    raise RuntimeError("handler bug")


@get("/ok")
async def ok() -> str:
    return "ok"


def http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: Litestar, path: str, events: list[str]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            events.append("last byte sent")
        elif message["type"] == "http.response.start":
            events.append(f"status {message['status']}")

    await app(http_scope(path), receive, send)  # type: ignore[arg-type]


class _Order(logging.Handler):
    def __init__(self, events: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(f"{record.levelname} {record.getMessage().split(' (')[0]}")


@contextmanager
def request_log() -> Iterator[list[str]]:
    """What the client receives and what the request logger logs, in the order it happens."""
    events: list[str] = []
    handler = _Order(events)
    logger = logging.getLogger("litestar_omnii_obs.requests")
    logger.addHandler(handler)
    try:
        yield events
    finally:
        logger.removeHandler(handler)


@pytest.mark.asyncio
async def test_a_server_error_is_logged_after_the_client_has_the_whole_response(sink: Path) -> None:
    app = Litestar(
        route_handlers=[crash, ok],
        plugins=[ObservabilityPlugin(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink))))],
    )
    with request_log() as events:
        async with app.lifespan():
            await call(app, "/crash", events)
            await call(app, "/ok", events)
    # The traceback is formatted after the last byte: the client never waits for it.
    assert events == [
        "status 500",
        "last byte sent",
        "ERROR GET /crash -> 500: RuntimeError",
        "status 200",
        "last byte sent",
    ]
    assert [(r["route"], r["status"], r.get("error")) for r in read_lines(sink)] == [
        ("/crash", 500, "RuntimeError"),
        ("/ok", 200, None),
    ]


@pytest.mark.asyncio
async def test_no_error_line_when_server_errors_are_not_logged(sink: Path) -> None:
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(sink)), latency=LatencyConfig(log_server_errors=False))
    app = Litestar(route_handlers=[crash], plugins=[ObservabilityPlugin(config)])
    with request_log() as events:
        async with app.lifespan():
            await call(app, "/crash", events)
    assert events == ["status 500", "last byte sent"]


@pytest.mark.asyncio
async def test_the_threads_the_plugin_needs_run_before_the_first_request(sink: Path) -> None:
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(sink)))
    app = Litestar(route_handlers=[ok], plugins=[ObservabilityPlugin(config)])
    before = {t.name for t in threading.enumerate()}
    async with app.lifespan():
        started = {t.name for t in threading.enumerate()} - before
        assert "omnii-obs-metrics" in started  # the line writer, started by the lifespan, not a request
        events: list[str] = []
        await call(app, "/ok", events)
        assert {t.name for t in threading.enumerate()} - before == started  # the request started none
    assert len(read_lines(sink)) == 1
