"""Shared fixtures: a real uvicorn server on 127.0.0.1 and the metric lines it wrote."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from litestar_omnii_obs import ObservabilityConfig, ObservabilityPlugin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: Litestar) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server in a thread; yield its base URL.

    Leaving the block shuts the server down, which runs the app's lifespan exit
    (and so flushes every metric line) before returning.
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextmanager
def running_app(config: ObservabilityConfig, *handlers: Any) -> Iterator[TestClient[Litestar]]:
    """An app with the plugin and ``handlers``, its lifespan running (in-process, Litestar's TestClient)."""
    app = Litestar(route_handlers=list(handlers), plugins=[ObservabilityPlugin(config)])
    with TestClient(app) as client:
        yield client


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line in ``path`` (each must parse)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds; returns whether it did (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    """A file sink for metric lines, unique to the test."""
    return tmp_path / "metrics.jsonl"


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def obs_log() -> Iterator[list[logging.LogRecord]]:
    """Records logged by the package's logger, whatever Litestar does to the root logger."""
    handler = _ListHandler()
    logger = logging.getLogger("litestar_omnii_obs")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
