"""In-process per-feature cost: each variant's app driven directly through ASGI, no network, no server.

Every variant runs in its own fresh process (global SDK state — sentry-sdk's init, OpenTelemetry's global
provider — cannot be undone within one), with the same environment as over HTTP, so the same live or dead
peers. The worker runs the app's lifespan startup, checks one response, warms up, then sends
``BENCH_INPROC_REQUESTS`` (default 20000) hand-built ``GET /users/42`` requests one after another, timed in
``BENCH_INPROC_REPEATS`` (default 5) equal repeats, reports the median µs per request of the repeats and
runs the lifespan shutdown.

Standalone: ``.venv/bin/python -m bench.inprocess`` (honours BENCH_ONLY); the driver calls :func:`run_all`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

from bench import variants
from bench.variants import BARE, Variant

ROOT = Path(__file__).resolve().parent.parent
MARKER = "BENCH_RESULT "
WARMUP_REQUESTS = 1000

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


def _settings() -> tuple[int, int]:
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


class _Lifespan:
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


async def _check(app: Any) -> None:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(_scope(), _receive, send)
    status = messages[0].get("status")
    body = b"".join(m.get("body", b"") for m in messages[1:])
    if status != 200 or json.loads(body) != {"id": 42, "name": "user-42"}:
        raise RuntimeError(f"unexpected response {status} {body[:200]!r}")


async def _timed(app: Any, n: int) -> float:
    """µs per request over ``n`` sequential requests."""

    async def send(message: dict[str, Any]) -> None:
        return None

    start = perf_counter()
    for _ in range(n):
        await app(_scope(), _receive, send)
    return (perf_counter() - start) / n * 1e6


async def _drive(app: Any, requests: int, repeats: int) -> list[float]:
    lifespan = _Lifespan(app)
    await lifespan.startup()
    try:
        await _check(app)
        await _timed(app, WARMUP_REQUESTS)
        return [await _timed(app, requests) for _ in range(repeats)]
    finally:
        await lifespan.shutdown()


def worker() -> None:
    requests, repeats = _settings()
    from bench.apps import app  # built from BENCH_VARIANT and the environment, as under uvicorn

    samples = asyncio.run(_drive(app, requests, repeats))
    print(MARKER + json.dumps({"us": samples}), flush=True)


# --------------------------------------------------------------------------- the parent


def measure(variant: Variant, peers: Any) -> list[float]:
    """Run one variant's worker; its µs per request for each repeat."""
    requests, repeats = _settings()
    workdir = peers.workdir / f"inproc-{variant.name}"
    workdir.mkdir(exist_ok=True)
    env = variants.clean_environ(variant, peers.endpoints(workdir))
    env["BENCH_INPROC_REQUESTS"], env["BENCH_INPROC_REPEATS"] = str(requests * repeats), str(repeats)
    timeout = 120 + (requests * repeats + WARMUP_REQUESTS) * 0.002  # 2 ms a request is far beyond any variant
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            samples: list[float] = json.loads(line[len(MARKER) :])["us"]
            return samples
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"worker exited {done.returncode}: {tail[:300]}")


def run_all(selected: list[Variant], peers: Any) -> str:
    """The in-process table (markdown) for ``selected``; bare first, as the baseline."""
    requests, repeats = _settings()
    results: dict[str, list[float] | str] = {}
    for variant in selected:
        try:
            results[variant.name] = measure(variant, peers)
            median = statistics.median(results[variant.name])
            print(f"  in-process {variant.name:22} {median:8.1f} µs/req", file=sys.stderr, flush=True)
        except Exception as exc:
            results[variant.name] = str(exc)
            print(f"  in-process {variant.name:22} failed: {exc}", file=sys.stderr, flush=True)
    bare = results.get(BARE)
    bare_us = statistics.median(bare) if isinstance(bare, list) else None
    rows = []
    for name, result in results.items():
        if isinstance(result, str):
            rows.append(f"| `{name}` | failed: {result[:160]} | | | |")
            continue
        us = statistics.median(result)
        added = "" if bare_us is None else f"{us - bare_us:+.1f}"
        factor = "" if bare_us is None else f"{us / bare_us:.2f}"
        rows.append(f"| `{name}` | {us:.1f} | {min(result):.1f}-{max(result):.1f} | {added} | {factor} |")
    header = (
        f"{requests * repeats} sequential requests per variant, timed in {repeats} repeats of {requests}; "
        "µs/req is the median repeat, spread the fastest and slowest. Each variant runs in a fresh process "
        "with its lifespan started, with the same environment and peers as over HTTP; background threads "
        "(exporters, writers) share the GIL, so their cost is included.\n\n"
        "| variant | µs/req | spread | µs over bare | x bare µs |\n| --- | ---: | ---: | ---: | ---: |"
    )
    return header + "\n" + "\n".join(rows)


def main(argv: list[str]) -> int:
    if "--worker" in argv:
        worker()
        return 0
    from bench.peers import Peers

    selected = variants.select(os.environ.get("BENCH_ONLY"))
    with Peers() as peers:
        print(run_all(selected, peers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
