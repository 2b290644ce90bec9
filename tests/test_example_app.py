"""End to end: ``example_app`` under a real uvicorn process, read through its stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "example_app.app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"example_app exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            httpx.get(url + "/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("example_app did not start")


def metric_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_example_app_writes_one_line_per_request_and_its_own_metrics() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start({"APP_ENV": "test", "APP_VERSION": "9.9.9"}, port)
    try:
        wait_ready(url, proc)
        with httpx.Client(base_url=url) as client:
            statuses = [
                client.get("/users/42").status_code,
                client.post("/graph/query", json={"query": "MATCH (n) RETURN n"}).status_code,
                client.post("/sync/calendar", json={"user_id": "u-1"}).status_code,
                client.post("/sync/fax", json={"user_id": "u-1"}).status_code,
                client.get("/boom").status_code,
                client.get("/nothing-here").status_code,
            ]
            bad_source = client.post("/sync/fax", json={"user_id": "u-1"}).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert statuses == [200, 200, 200, 400, 500, 404]
    assert "unknown sync source 'fax'" in bad_source["detail"]
    assert "calendar, tasks, gmail, contacts" in bad_source["detail"]
    lines = metric_lines(stdout)
    latency = [(r["method"], r["route"], r["status"]) for r in lines if r["metric"] == "api_latency"]
    assert latency == [
        ("GET", "/users/{user_id}", 200),
        ("POST", "/graph/query", 200),
        ("POST", "/sync/{source}", 200),
        ("POST", "/sync/{source}", 400),
        ("GET", "/boom", 500),
        ("GET", "UNMATCHED", 404),
        ("POST", "/sync/{source}", 400),
    ]
    [graph] = [r for r in lines if r["metric"] == "graph_query_duration"]
    assert (graph["query_type"], graph["result_count"]) == ("cypher", 3)
    [sync] = [r for r in lines if r["metric"] == "sync_duration"]
    assert (sync["source"], sync["user_id"], sync["items_synced"]) == ("calendar", "u-1", 7)
    assert {(r["service"], r["environment"]) for r in lines} == {("omnii-mcp", "test")}
    # uvicorn re-raises SIGTERM after a clean shutdown, so -15 is a graceful exit too.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr


def test_example_app_refuses_to_start_on_a_bad_environment() -> None:
    proc = start({"SENTRY_TRACES_SAMPLE_RATE": "2", "OMNII_OBS_METRICS_SINK": "/no/such/dir/m.jsonl"}, free_port())
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "ConfigError" in stderr
    assert "SENTRY_TRACES_SAMPLE_RATE='2': a number in [0.0, 1.0]" in stderr
    assert "OMNII_OBS_METRICS_SINK='/no/such/dir/m.jsonl'" in stderr
