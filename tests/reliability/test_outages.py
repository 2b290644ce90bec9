"""Peers that go down, come back, hang or reset: nothing lost that could be kept, every loss counted exactly.

example_app runs under uvicorn (one worker, or four sharing the peers) with real peers on
127.0.0.1; traffic is real HTTP. What each peer received is compared with what the
requests produced, and with the one summary line per destination the server logs at
SIGTERM (README "Reliability").
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.otlp_receiver import OtlpReceiver
from tests.peers.sentry_ingest import SentryIngest
from tests.peers.tcp_peers import HungPeer, ResettingPeer
from tests.reliability.servers import Server, save_figures, start_server

pytestmark = pytest.mark.reliability

OUTAGE_SECONDS = float(os.environ.get("RELIABILITY_OUTAGE_SECONDS", "20"))
SUMMARY = re.compile(r"^.*?(OTLP trace export|Sentry event sending) to (\S+): (\d+) \w+\(s\) delivered, (\d+) lost")


def env_for(collector: str, dsn: str | None, sink: Path) -> dict[str, str]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
        "OTEL_TRACES_SAMPLER": "always_on",  # every request's span, so what arrives can be checked one by one
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OMNII_OBS_METRICS_SINK": str(sink),
        "OMNII_OBS_EXPORT_TIMEOUT": "1",
        "OMNII_OBS_SHUTDOWN_TIMEOUT": "4",
        "OMNII_OBS_SENTRY_FLUSH_TIMEOUT": "1",
        "SENTRY_TRACES_SAMPLE_RATE": "0",
        "OMNII_OBS_LOG_ERRORS": "false",
    }
    if dsn is not None:
        env["SENTRY_DSN"] = dsn
    return env


def summaries(server: Server) -> dict[str, tuple[int, int]]:
    """(delivered, lost) per destination kind, summed over the server's workers."""
    totals: dict[str, tuple[int, int]] = {}
    for line in server.stderr().splitlines():
        match = SUMMARY.match(line)
        if match:
            kind, delivered, lost = match.group(1), int(match.group(3)), int(match.group(4))
            before = totals.get(kind, (0, 0))
            totals[kind] = (before[0] + delivered, before[1] + lost)
    return totals


class SteadyTraffic:
    """GET /users/{i} at a fixed rate from a thread; remembers when each request was made and its trace id."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.made: list[tuple[float, str, int]] = []  # (monotonic time sent, X-Request-ID, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                sent = time.monotonic()
                response = client.get(f"/users/{i}")
                self.made.append((sent, response.headers["x-request-id"], response.status_code))
                i += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_collector_killed_and_restarted_on_the_same_port_gets_every_span(protocol: str, tmp_path: Path) -> None:
    port = free_port()
    receiver = (OtlpHttpReceiver if protocol == "http/protobuf" else OtlpReceiver)(port=port).start()
    env = env_for(receiver.endpoint, None, tmp_path / "m.jsonl") | {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    server = start_server(env, tmp_path)
    try:
        with SteadyTraffic(server.url, rate=40) as traffic:
            time.sleep(3)
            receiver.stop()
            time.sleep(OUTAGE_SECONDS)
            receiver.start()
            restarted = time.monotonic()
            time.sleep(6)
        made = list(traffic.made)
        # Everything made before, during and after the outage: the outage's spans were kept (bounded queue).
        assert wait_for(lambda: len(receiver.spans()) >= len(made), timeout=15)
    finally:
        server.stop()
        receiver.stop()
    received = {span.trace_id for span in receiver.spans()}
    after = [request_id for sent, request_id, _ in made if sent >= restarted + 3]
    during = [request_id for sent, request_id, _ in made if restarted - OUTAGE_SECONDS <= sent < restarted]
    assert after
    assert during
    assert set(after) <= received  # the bar: every span of requests from 3 s after the restart
    assert {request_id for _, request_id, _ in made} <= received  # ours: the outage's spans too
    assert all(status == 200 for _, _, status in made)
    lines = [line for line in server.stderr().splitlines() if receiver.endpoint in line]
    assert sum("is failing" in line for line in lines) == 1, lines
    assert sum("recovered" in line for line in lines) == 1, lines
    # A destination that lost nothing says nothing at shutdown (only losses are reported).
    assert "OTLP trace export" not in summaries(server), server.stderr()
    lost = 0
    save_figures(
        "outage_restart" if protocol == "grpc" else "outage_restart_http",
        {"outage_s": OUTAGE_SECONDS, "requests": len(made), "during_outage": len(during), "lost": lost},
    )


async def _drive(url: str, paths: list[str], concurrency: int) -> list[int]:
    statuses: list[int] = []
    queue = list(reversed(paths))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while queue:
                path = queue.pop()
                statuses.append((await client.get(path)).status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("fault", ["hung", "refused"])
def test_at_sigterm_the_reported_losses_equal_the_actual_losses(tmp_path: Path, fault: str, workers: int) -> None:
    requests, errors = 600, 60
    paths = [("/boom" if i % 10 == 0 else f"/users/{i}") for i in range(requests)]
    collector = HungPeer() if fault == "hung" else ResettingPeer()
    sentry = HungPeer() if fault == "hung" else ResettingPeer()
    with collector, sentry:
        dsn = f"http://publickey@127.0.0.1:{sentry.port}/42"
        server = start_server(env_for(collector.endpoint, dsn, tmp_path / "m.jsonl"), tmp_path, workers=workers)
        statuses = asyncio.run(_drive(server.url, paths, concurrency=8))
        assert statuses.count(500) == errors
        assert statuses.count(200) == requests - errors
        assert server.stop(timeout=60) in (0, -15)  # uvicorn ends by re-raising SIGTERM
        totals = summaries(server)
    # Neither peer ever answered: every span and every event is lost, and the report says exactly that.
    assert totals["OTLP trace export"] == (0, requests), server.stderr()
    assert totals["Sentry event sending"] == (0, errors), server.stderr()
    # Logged once per outage per worker at most (a hung peer never even fails before the bound).
    failing = [line for line in server.stderr().splitlines() if "is failing" in line]
    assert len(failing) <= 3 * workers, failing  # traces, metrics, Sentry events
    save_figures(
        f"losses_{fault}_{workers}w",
        {"spans_made": requests, "spans_reported_lost": totals["OTLP trace export"][1], "events": errors},
    )


def test_sentry_that_is_down_is_probed_not_hammered_and_gets_what_was_kept_when_back(tmp_path: Path) -> None:
    port = free_port()
    down = ResettingPeer(port).start()
    receiver = OtlpHttpReceiver().start()
    server = start_server(
        env_for(receiver.endpoint, f"http://publickey@127.0.0.1:{port}/42", tmp_path / "m.jsonl"), tmp_path
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            started = time.monotonic()
            for i in range(80):  # 10 errors a second for 8 s
                assert client.get("/boom").status_code == 500
                time.sleep(max(0.0, started + (i + 1) / 10 - time.monotonic()))
            elapsed = time.monotonic() - started
            attempts = down.accepted
            down.stop()
            with SentryIngest(port=port) as ingest:
                back = time.monotonic()
                client.get("/boom")  # one more error: the next probe finds Sentry back and sends what was kept
                assert ingest.wait_for_events(81, timeout=10)
                resumed = time.monotonic() - back
                server.stop()
    finally:
        server.stop()
        receiver.stop()
        down.stop()
    # One connection per probe window (2 s), not one per event.
    assert 2 <= attempts <= elapsed / 2 + 2, attempts
    assert "Sentry event sending" not in summaries(server)  # nothing lost: no loss line at shutdown
    figures = {"events": 80, "seconds": round(elapsed, 1), "connections": attempts, "resumed_s": round(resumed, 1)}
    save_figures("sentry_down", figures)
