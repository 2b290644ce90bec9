"""Run ``example_app`` as a real server process and drive it with bounded load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Server:
    """A server process serving ``example_app.app:app`` on 127.0.0.1."""

    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the server process and its children (granian workers)."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total


def start_server(
    env: dict[str, str],
    tmp: Path,
    *,
    server: str = "uvicorn",
    workers: int = 1,
    stdout: int = subprocess.DEVNULL,
    http: str | None = None,
) -> Server:
    """``server``: ``uvicorn``, ``gunicorn`` (uvicorn workers) or ``granian``, with ``workers`` processes.

    ``http``: uvicorn's HTTP implementation (``h11``, ``httptools``); ``None``: uvicorn's own choice.
    """
    port = free_port()
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "example_app.app:app", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--no-access-log", "--timeout-keep-alive", "30"]
        if http is not None:
            command += ["--http", http]
        if workers > 1:
            command += ["--workers", str(workers)]
    elif server == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", "example_app.app:app", "--bind", f"127.0.0.1:{port}"]
        command += ["--worker-class", "uvicorn.workers.UvicornWorker", "--workers", str(workers)]
        command += ["--keep-alive", "30", "--graceful-timeout", "20"]
    else:
        command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--workers", str(workers), "--no-ws", "example_app.app:app"]
    stderr_path = tmp / f"{server}-{port}.stderr"
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", "APP_ENV": "production", **env}
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=full_env,
        stdout=stdout,
        stderr=stderr_path.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{stderr_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Server(proc, url, stderr_path)
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


# (method, path, expected route label or None when excluded, expected status)
def request_mix(n: int) -> list[tuple[str, str, str | None, int]]:
    kinds = [
        ("GET", "/users/{i}", "/users/{user_id}", 200),
        ("GET", "/nothing/{i}", "UNMATCHED", 404),
        ("POST", "/sync/fax", "/sync/{source}", 400),
        ("GET", "/boom", "/boom", 500),
        ("GET", "/health", None, 200),
        ("DELETE", "/users/{i}", "UNMATCHED", 405),
        ("POST", "/graph/query", "/graph/query", 200),
    ]
    mix = []
    for i in range(n):
        method, path, route, status = kinds[i % len(kinds)]
        mix.append((method, path.format(i=i), route, status))
    return mix


@dataclass
class Outcome:
    method: str
    path: str
    route: str | None
    expected: int
    status: int | None = None
    request_id: str | None = None
    latency: float = 0.0
    error: str | None = None


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is not None]

    def p99(self) -> float:
        latencies = sorted(o.latency for o in self.answered)
        return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0


async def drive(
    url: str,
    n: int,
    concurrency: int,
    *,
    on_progress: Any = None,
    stop_after: float | None = None,
) -> LoadResult:
    """Send ``n`` requests of the mix with ``concurrency`` in flight; never raises for transport errors."""
    result = LoadResult([Outcome(m, p, r, s) for m, p, r, s in request_mix(n)])
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for outcome in result.outcomes:
        queue.put_nowait(outcome)
    deadline = None if stop_after is None else time.monotonic() + stop_after
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                if deadline is not None and time.monotonic() > deadline:
                    return
                outcome = queue.get_nowait()
                body = {"query": "MATCH (n) RETURN n"} if "graph" in outcome.path else {"user_id": "u"}
                started = time.perf_counter()
                try:
                    response = await client.request(
                        outcome.method, outcome.path, json=body if outcome.method == "POST" else None
                    )
                except httpx.TransportError as exc:
                    outcome.error = repr(exc)
                    continue
                outcome.latency = time.perf_counter() - started
                outcome.status = response.status_code
                outcome.request_id = response.headers.get("x-request-id")
                done += 1
                if on_progress is not None:
                    on_progress(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def metric_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_figures(name: str, figures: dict[str, Any]) -> None:
    """Keep the figures a test measured, for ``tests/reliability/report.py``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
