"""Websockets are observed: one server span per connection, a ``websocket_session`` record when it ends,
a handler's exception logged once at ERROR with its traceback and sent to Sentry once.

The app runs its lifespan under Litestar's TestClient (in-process ASGI; uvicorn needs a websocket
library this project does not depend on); the span goes to a real OTLP gRPC receiver and the event
to a real Sentry ingest on 127.0.0.1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from litestar import Litestar, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect, WebSocketException
from litestar.params import FromPath
from litestar.testing import TestClient

from litestar_omnii_obs import (
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
    WebSocketMetric,
)
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.conftest import read_lines
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest


@websocket("/echo/{room:str}")
async def echo(socket: WebSocket[object, object, object], room: FromPath[str]) -> None:
    await socket.accept()
    text = await socket.receive_text()
    await socket.send_text(f"{room}:{text}")
    await socket.close(code=1000)


@websocket("/crash")
async def crash(socket: WebSocket[object, object, object]) -> None:
    await socket.accept()
    await socket.receive_text()
    raise RuntimeError("socket kaput")


@websocket("/refuse")
async def refuse(socket: WebSocket[object, object, object]) -> None:
    await socket.accept()
    raise WebSocketException(detail="not allowed", code=4003)  # a deliberate close, not an error


def _config(sink: Path, endpoint: str, dsn: str | None) -> ObservabilityConfig:
    return ObservabilityConfig(
        environment="test",
        metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
        sentry=SentryConfig(dsn=dsn),
        tracing=TracingConfig(otlp_endpoint=endpoint, shutdown_timeout=3.0),
    )


def test_each_connection_has_a_span_a_record_and_errors_are_reported_once(
    sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    with OtlpHttpReceiver() as receiver, SentryIngest() as ingest:
        app = Litestar(
            [echo, crash, refuse], plugins=[ObservabilityPlugin(_config(sink, receiver.endpoint, ingest.dsn))]
        )
        with TestClient(app) as client:
            with client.websocket_connect("/echo/lobby") as socket:
                socket.send_text("hi")
                assert socket.receive_text() == "lobby:hi"
            with client.websocket_connect("/crash") as socket:
                socket.send_text("boom")
                with pytest.raises(WebSocketDisconnect) as closed:
                    socket.receive_text()
            assert closed.value.code == 4500
            with client.websocket_connect("/refuse") as socket, pytest.raises(WebSocketDisconnect):
                socket.receive_text()
        events = ingest.events()
        spans = {s.name: s for s in receiver.spans()}
    records = {line["route"]: line for line in read_lines(sink) if line["metric"] == "websocket_session"}
    assert sorted(records) == ["/crash", "/echo/{room}", "/refuse"]
    assert records["/echo/{room}"]["close_code"] == 1000
    assert "error" not in records["/echo/{room}"]
    assert (records["/crash"]["close_code"], records["/crash"]["error"]) == (4500, "RuntimeError")
    assert records["/refuse"]["close_code"] == 4003
    assert "error" not in records["/refuse"]
    assert sorted(spans) == ["/crash", "/echo/{room}", "/refuse"]
    failed = spans["/crash"]
    assert failed.status_code == "error"
    assert failed.event_names() == ["exception"]
    assert failed.attributes["websocket.close.code"] == 4500
    assert failed.trace_id == records["/crash"]["trace_id"]
    assert spans["/echo/{room}"].attributes["url.path"] == "/echo/lobby"
    assert spans["/refuse"].status_code == "unset"
    # Once at ERROR with its traceback, once to Sentry; the deliberate 4003 close is neither.
    errors = [r for r in obs_log if r.levelno == logging.ERROR and r.name == "litestar_omnii_obs.requests"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "RuntimeError" in errors[0].getMessage()
    assert [e["exception"]["values"][0]["type"] for e in events] == ["RuntimeError"]
    assert events[0]["transaction"] == "WEBSOCKET /crash"


def test_a_websocket_route_opted_out_is_not_observed(sink: Path) -> None:
    @websocket("/quiet", opt={"observability": False})
    async def quiet(socket: WebSocket[object, object, object]) -> None:
        await socket.accept()
        await socket.send_text("ok")
        await socket.close()

    with OtlpHttpReceiver() as receiver:
        app = Litestar([quiet], plugins=[ObservabilityPlugin(_config(sink, receiver.endpoint, None))])
        with TestClient(app) as client, client.websocket_connect("/quiet") as socket:
            assert socket.receive_text() == "ok"
        assert receiver.spans() == []
    assert [line for line in read_lines(sink) if line["metric"] == "websocket_session"] == []


def test_a_test_sees_the_failed_connections_event_span_and_record_as_soon_as_the_socket_closes(
    obs_capture: ObservabilityCapture,
) -> None:
    # Litestar closes with 4500 before the middleware's own code after the handler runs: the plugin does
    # its close work when the close is sent, so a test reading right after the close sees all of it.
    app = Litestar([crash, echo], plugins=[ObservabilityPlugin(ObservabilityConfig(environment="test"))])
    with TestClient(app) as client:
        with client.websocket_connect("/crash") as socket:
            socket.send_text("hi")
            with pytest.raises(WebSocketDisconnect):
                socket.receive_text()
        seen = (
            len(obs_capture.sentry_events),
            [s.name for s in obs_capture.spans],
            obs_capture.records(WebSocketMetric),
        )
        with client.websocket_connect("/echo/a") as socket:
            socket.send_text("x")
            assert socket.receive_text() == "a:x"
        after_echo = [r for r in obs_capture.records(WebSocketMetric) if r.route == "/echo/{room}"]
    events, spans, records = seen
    assert (events, spans) == (1, ["/crash"])
    assert [(r.route, r.close_code, r.error) for r in records] == [("/crash", 4500, "RuntimeError")]
    assert [r.close_code for r in after_echo] == [1000]
