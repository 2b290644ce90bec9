"""In-process per-feature cost: each variant's app driven directly through ASGI, no network, no server.

Every variant runs in its own fresh process (global SDK state -- sentry-sdk's init, OpenTelemetry's global
provider -- cannot be undone within one), with the same environment as over HTTP, so the same live or dead
peers. The worker runs the app's lifespan startup, checks one response, warms up, then sends
``BENCH_INPROC_REQUESTS`` (default 20000) hand-built ``GET /users/42`` requests one after another, split
into ``BENCH_INPROC_REPEATS`` (default 5) repeats, and runs the lifespan shutdown.

The figure is the whole process's CPU time per request (``time.process_time()``: CLOCK_PROCESS_CPUTIME_ID,
every thread, so exporters, writers and gRPC's own threads count). Each repeat ends, inside its window,
with a flush of what its requests queued for background threads (span batches, Sentry's transport queue:
``bench.apps.flush``) and a short idle settle, so that work is counted in the repeat that caused it. Bare
Litestar runs first and last; its repeats together are the baseline.

Standalone: ``.venv/bin/python -m bench.inprocess`` (honours BENCH_ONLY); the driver calls :func:`run_all`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import variants
from bench.variants import BARE, Variant

ROOT = Path(__file__).resolve().parent.parent
WARMUP_REQUESTS = 1000
SETTLE_S = 0.06
RECORD = b'"metric":"api_latency"'

_REQUEST_MESSAGE = {"type": "http.request", "body": b"", "more_body": False}
_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/users/42",
    "raw_path": b"/users/42",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


def settings() -> tuple[int, int]:
    """(requests per repeat, repeats): BENCH_INPROC_REQUESTS in all, split into BENCH_INPROC_REPEATS."""
    try:
        total = int(os.environ.get("BENCH_INPROC_REQUESTS", "") or 20000)
        repeats = int(os.environ.get("BENCH_INPROC_REPEATS", "") or 5)
    except ValueError:
        raise SystemExit("BENCH_INPROC_REQUESTS and BENCH_INPROC_REPEATS must be integers") from None
    if total < 1 or repeats < 1:
        raise SystemExit("BENCH_INPROC_REQUESTS and BENCH_INPROC_REPEATS must be positive")
    return max(1, total // repeats), repeats


# --------------------------------------------------------------------------- the worker (one variant)


def _scope() -> dict[str, Any]:
    scope = dict(_SCOPE)
    scope["state"] = {}
    return scope


async def _receive() -> dict[str, Any]:
    return _REQUEST_MESSAGE


class Lifespan:
    """The ASGI lifespan protocol, as a server runs it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _phase(self, name: str) -> None:
        await self.inbox.put({"type": f"lifespan.{name}"})
        message = await asyncio.wait_for(self.outbox.get(), 60)
        if message["type"] != f"lifespan.{name}.complete":
            raise RuntimeError(f"lifespan {name} failed: {message}")

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self._phase("startup")

    async def shutdown(self) -> None:
        await self._phase("shutdown")
        if self.task is not None:
            await asyncio.wait_for(self.task, 60)


async def check_response(app: Any) -> None:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(_scope(), _receive, send)
    status = messages[0].get("status")
    body = b"".join(m.get("body", b"") for m in messages[1:])
    if status != 200 or json.loads(body) != {"id": 42, "name": "user-42"}:
        raise RuntimeError(f"unexpected response {status} {body[:200]!r}")


async def _send(message: dict[str, Any]) -> None:
    return None


async def _timed(app: Any, n: int, flush: Any) -> tuple[float, float]:
    """(CPU µs, wall µs) per request over ``n`` sequential requests, then the background work they queued."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await app(_scope(), _receive, _send)
    wall_us = (time.perf_counter() - wall) / n * 1e6
    await asyncio.to_thread(flush)
    await asyncio.sleep(SETTLE_S)  # e.g. the metric writer's next tick
    return (time.process_time() - cpu) / n * 1e6, wall_us


async def _drive(app: Any, flush: Any, requests: int, repeats: int) -> dict[str, list[float]]:
    lifespan = Lifespan(app)
    await lifespan.startup()
    try:
        await check_response(app)
        await _timed(app, WARMUP_REQUESTS, flush)
        samples = [await _timed(app, requests, flush) for _ in range(repeats)]
        return {"cpu": [s[0] for s in samples], "wall": [s[1] for s in samples]}
    finally:
        await lifespan.shutdown()


def worker() -> None:
    requests, repeats = settings()
    from bench.apps import app, flush  # built from BENCH_VARIANT and the environment, as under a server

    result = asyncio.run(_drive(app, flush, requests, repeats))
    Path(os.environ["BENCH_RESULT_FILE"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------- the parent


@dataclass
class Result:
    variant: Variant
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    sent: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    log_lines: int = 0
    log_head: list[str] = field(default_factory=list)
    failure: str | None = None
    note: str = ""

    def needs_request_setup(self, key: str) -> float | None:
        return self.delivered[key] / self.sent if key in self.delivered and self.sent else None


def measure(variant: Variant, peers: Any, tag: str = "") -> Result:
    """Run one variant's worker in a fresh process."""
    requests, repeats = settings()
    result = Result(variant, sent=requests * repeats + WARMUP_REQUESTS + 1)
    workdir = peers.workdir / f"inproc-{variant.name}{tag}"
    workdir.mkdir(exist_ok=True)
    env = variants.clean_environ(variant, peers.endpoints(workdir))
    env.update(
        BENCH_INPROC_REQUESTS=str(requests * repeats),
        BENCH_INPROC_REPEATS=str(repeats),
        BENCH_RESULT_FILE=str(workdir / "result.json"),
    )
    timeout = 120 + (requests * repeats + WARMUP_REQUESTS) * 0.005  # 5 ms a request is far beyond any variant
    peers.reset()
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-m", "bench.inprocess", "--worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    counts = peers.counts()
    records, logs = 0, []
    for name in ("stdout.log", "stderr.log"):
        for line in (workdir / name).read_bytes().splitlines():
            if RECORD in line:
                records += 1
            elif line.strip():
                logs.append(line.decode(errors="replace")[:200])
    result.log_lines, result.log_head = len(logs), logs[:6]
    try:
        samples = json.loads((workdir / "result.json").read_text())
        result.cpu, result.wall = samples["cpu"], samples["wall"]
    except (OSError, ValueError, KeyError):
        errors = [line for line in logs if "Error" in line or "error" in line or "Traceback" in line]
        result.failure = f"worker exited {done.returncode}: {(errors or logs or ['no output'])[-1]}"
    if variant.app == "obs":
        result.delivered["rec"] = records
    if variant.uses_otlp:
        result.delivered["spans"] = counts["spans"]
    if variant.uses_sentry:
        result.delivered["sentry"] = counts["sentry"]
        result.delivered["sentry spans"] = counts["sentry spans"]
    return result


def run_all(selected: list[Variant], peers: Any, log: Any = None) -> dict[str, Result]:
    """Every selected variant, bare first and again last (its repeats pooled), by name."""
    order = [variants.get(BARE)] + [v for v in selected if v.name != BARE] + [variants.get(BARE)]
    results: dict[str, Result] = {}
    for i, variant in enumerate(order):
        result = measure(variant, peers, tag=f"-{i}")
        if log is not None:
            status = result.failure or f"{statistics.median(result.cpu):8.1f} µs CPU/req"
            log(f"  in-process {variant.name:24} {status}")
        first = results.get(variant.name)
        if first is None or first.failure:
            results[variant.name] = result
        elif not result.failure:  # bare again, at the end
            first.note = f"bare first {statistics.median(first.cpu):.1f}, last {statistics.median(result.cpu):.1f} µs"
            first.cpu += result.cpu
            first.wall += result.wall
    return results


def main(argv: list[str]) -> int:
    if "--worker" in argv:
        worker()
        return 0
    from bench.peers import Peers
    from bench.report import inprocess_table

    selected = variants.select(os.environ.get("BENCH_ONLY"))
    with Peers() as peers:
        results = run_all(selected, peers, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(inprocess_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
