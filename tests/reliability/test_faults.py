"""Faults survived: dead, flapping, slow and refusing peers, and an unwritable metrics sink.

For each fault, example_app runs under uvicorn with real peers on 127.0.0.1 and takes a
bounded mix of requests. Every request must answer with its normal status, the fault
must be logged once (not per request), and the server must still shut down. The p99
latency against a no-fault run is measured and recorded for the README, not asserted
(tests never assert wall-clock times); memory growth under a dead collector is asserted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest
from tests.reliability.servers import RESULTS, LoadResult, Server, drive, metric_lines, save_figures, start_server

REQUESTS = 700
CONCURRENCY = 4  # below saturation, so p99 shows the fault, not queueing
SOAK_SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "60"))


@pytest.fixture
def peers() -> Iterator[tuple[OtlpHttpReceiver, SentryIngest]]:
    with OtlpHttpReceiver() as receiver, SentryIngest() as ingest:
        yield receiver, ingest


def dead_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def base_env(receiver: OtlpHttpReceiver, ingest: SentryIngest, sink: Path) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "SENTRY_DSN": ingest.dsn,
        "OMNII_OBS_METRICS_SINK": str(sink),
        "OMNII_OBS_EXPORT_TIMEOUT": "1",
        "OMNII_OBS_SHUTDOWN_TIMEOUT": "3",
        # The load's /boom requests fail on purpose; their per-request ERROR lines are tested in
        # tests/test_latency.py. Here every line counted must be about a fault.
        "OMNII_OBS_LOG_ERRORS": "false",
    }


def our_log_lines(server: Server) -> list[str]:
    """Lines the server wrote beyond uvicorn's own start/stop chatter."""
    return [line for line in server.stderr().splitlines() if line.strip() and not line.startswith("INFO:")]


def run(server: Server, during: Callable[[int], None] | None = None) -> LoadResult:
    try:
        return asyncio.run(drive(server.url, REQUESTS, CONCURRENCY, on_progress=during))
    finally:
        server.stop()


def assert_normal(result: LoadResult) -> None:
    # Every request the client got an answer to has its normal status; a transport-level failure on the
    # client side (a rare keep-alive race on 2 busy cores) is tolerated only a handful of times.
    errors = [o.error for o in result.outcomes if o.status is None]
    assert len(result.answered) >= REQUESTS - 3, errors
    wrong = [(o.path, o.status) for o in result.answered if o.status != o.expected]
    assert wrong == []


def server_p99(sink: Path) -> float | None:
    """p99 of the server-side durations in the metric lines (ms), free of client-side queueing."""
    durations = sorted(line["duration"] for line in metric_lines(sink) if line["metric"] == "api_latency")
    return durations[min(len(durations) - 1, int(len(durations) * 0.99))] if durations else None


def record(name: str, result: LoadResult, server: Server, sink: Path | None = None) -> None:
    figures: dict[str, object] = {
        "requests": REQUESTS,
        "answered_normally": sum(o.status == o.expected for o in result.answered),
        "client_p99_ms": round(result.p99() * 1000, 2),
        "log_lines": len(our_log_lines(server)),
    }
    p99 = server_p99(sink) if sink is not None else None
    if p99 is not None:
        figures["server_p99_ms"] = p99
    baseline = _baseline()
    if baseline:
        figures["client_p99_ratio"] = round(result.p99() * 1000 / baseline["client_p99_ms"], 2)
        if p99 is not None and baseline.get("server_p99_ms"):
            figures["server_p99_ratio"] = round(p99 / baseline["server_p99_ms"], 2)
    save_figures(f"fault-{name}", figures)


def _baseline() -> dict[str, float] | None:
    path = RESULTS / "fault-none.json"
    if not path.exists():
        return None
    import json

    data: dict[str, float] = json.loads(path.read_text())
    return data


def test_no_fault_baseline(peers: tuple[OtlpHttpReceiver, SentryIngest], tmp_path: Path) -> None:
    receiver, ingest = peers
    sink = tmp_path / "m.jsonl"
    (RESULTS / "fault-none.json").unlink(missing_ok=True)
    server = start_server(base_env(receiver, ingest, sink), tmp_path)
    result = run(server)
    assert_normal(result)
    assert our_log_lines(server) == [
        line for line in our_log_lines(server) if "Sentry initialised" in line
    ]  # nothing but the start-up note
    record("none", result, server, sink)


FAULTS = {
    "collector-absent": ("OTLP trace export to", "is failing"),
    "sentry-absent": ("Sentry event sending", "is failing"),
    "sentry-429": ("Sentry event sending", "is failing"),
    "sentry-500": ("Sentry event sending", "is failing"),
    "sink-full-disk": ("metrics sink", "failed"),
    "sink-unopenable": ("metrics sink", "failed"),
    "sink-closed-pipe": ("metrics sink", "failed"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_survived_and_logged_once(
    fault: str, peers: tuple[OtlpHttpReceiver, SentryIngest], tmp_path: Path
) -> None:
    receiver, ingest = peers
    env = base_env(receiver, ingest, tmp_path / "m.jsonl")
    stdout = subprocess.DEVNULL
    if fault == "collector-absent":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = dead_port_url()
    elif fault == "sentry-absent":
        env["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{free_port()}/42"
    elif fault.startswith("sentry-"):
        ingest.status = int(fault.rsplit("-", 1)[1])
    elif fault == "sink-full-disk":
        env["OMNII_OBS_METRICS_SINK"] = "/dev/full"
    elif fault == "sink-unopenable":
        env["OMNII_OBS_METRICS_SINK"] = "/proc/version"
    elif fault == "sink-closed-pipe":
        env["OMNII_OBS_METRICS_SINK"] = "stdout"
        stdout = subprocess.PIPE
    server = start_server(env, tmp_path, stdout=stdout)
    if server.proc.stdout is not None:
        server.proc.stdout.close()  # nobody reads the metric lines any more
    result = run(server)
    assert_normal(result)
    first, second = FAULTS[fault]
    matching = [line for line in our_log_lines(server) if first in line and second in line]
    assert len(matching) == 1, server.stderr()[-3000:]
    assert len(our_log_lines(server)) <= 6, server.stderr()[-3000:]
    record(fault, result, server, None if fault.startswith("sink-") else Path(env["OMNII_OBS_METRICS_SINK"]))


def test_slow_sentry_is_survived(peers: tuple[OtlpHttpReceiver, SentryIngest], tmp_path: Path) -> None:
    receiver, ingest = peers
    ingest.delay = 5.0
    server = start_server(base_env(receiver, ingest, tmp_path / "m.jsonl"), tmp_path)
    result = run(server)
    assert_normal(result)
    # Events wait in sentry-sdk's own queue; the bounded flush gives up once, with one line.
    assert len(our_log_lines(server)) <= 4, server.stderr()[-3000:]
    assert ingest.requests_received >= 1
    record("sentry-slow", result, server, tmp_path / "m.jsonl")


def test_collector_killed_mid_run_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    receiver = OtlpHttpReceiver(port=port).start()
    with SentryIngest() as ingest:
        env = base_env(receiver, ingest, tmp_path / "m.jsonl")
        env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        server = start_server(env, tmp_path)
        marks: dict[str, float] = {}

        def flap(done: int) -> None:
            if done == REQUESTS // 3:
                receiver.stop()
                marks["stopped"] = time.time()
            elif done == 2 * REQUESTS // 3:
                # A trace export has failed while it is down (a bounded poll, not a sleep that hopes it has).
                assert wait_until(lambda: any(trace_export_failing(line) for line in our_log_lines(server)), timeout=30)
                receiver.start()
                marks["restarted"] = time.time()
                # No wait for the next probe window: a run that ends inside it (a loaded machine) still
                # delivers what was kept, by the last attempt at shutdown.

        try:
            result = run(server, flap)
        finally:
            receiver.stop()
    assert_normal(result)
    assert set(marks) == {"stopped", "restarted"}
    after_restart = [s for s in receiver.spans() if s.start_time_unix_nano / 1e9 > marks["restarted"]]
    assert after_restart, "export did not resume after the collector came back"
    lines = our_log_lines(server)
    assert sum(trace_export_failing(line) for line in lines) == 1, lines
    assert sum("OTLP trace export" in line and "recovered" in line for line in lines) == 1, lines
    record("collector-restart", result, server, tmp_path / "m.jsonl")


def trace_export_failing(line: str) -> bool:
    return "OTLP trace export" in line and "is failing" in line


def test_memory_stays_bounded_with_a_dead_collector(tmp_path: Path) -> None:
    with SentryIngest() as ingest:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": dead_port_url(),
            "SENTRY_DSN": ingest.dsn,
            "OMNII_OBS_METRICS_SINK": str(tmp_path / "m.jsonl"),
            "OMNII_OBS_EXPORT_TIMEOUT": "1",
            "OMNII_OBS_SHUTDOWN_TIMEOUT": "2",
        }
        server = start_server(env, tmp_path)
        samples: dict[str, int] = {}
        sent = 0

        async def soak() -> None:
            nonlocal sent
            started = time.monotonic()
            while time.monotonic() - started < SOAK_SECONDS:
                batch = await drive(server.url, 400, CONCURRENCY)
                sent += len(batch.answered)
                assert all(o.status == o.expected for o in batch.answered)
                elapsed = time.monotonic() - started
                if "early" not in samples and elapsed >= min(10.0, SOAK_SECONDS / 6):
                    samples["early"] = server.rss_kib()
            samples["late"] = server.rss_kib()

        try:
            asyncio.run(soak())
        finally:
            server.stop()
    ratio = samples["late"] / samples["early"]
    save_figures(
        "memory-dead-collector",
        {
            "soak_seconds": SOAK_SECONDS,
            "requests": sent,
            "rss_early_kib": samples["early"],
            "rss_late_kib": samples["late"],
            "rss_ratio": round(ratio, 3),
        },
    )
    assert ratio <= 1.2, samples
