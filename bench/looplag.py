"""Event-loop lag at a fixed rate (issue 22): how long the loop waits while background threads run.

The plugin's background threads (the line writer, the span batcher and exporters, the metric reader)
hold the GIL while they run Python; the event loop cannot run then, and requests wait. Their longest
holds are what a user sees in the tail. This measures them from the loop's side: a probe task sleeps
1 ms over and over in the server's event loop (``app`` wraps ``bench.apps:app`` and starts it at
lifespan start-up), and each wake-up later than asked is a lag: the loop was busy (its own requests,
as in bare) or its thread did not run (the GIL was with a background thread, or the OS ran another
process). The thread's own CPU time over the lag tells the two apart ("not running"). Variants run side by side
with bare under uvicorn (uvloop + httptools, 1 worker) at the same fixed rate as ``bench.tail``
(wrk, ``bench/fixed_rate.lua``); the probe's own wake-ups (1,000 a second) cost every variant alike.
Standalone only::

    .venv/bin/python -m bench.looplag [variant,variant,...]   # default: bare, obs-prod, obs-all100

``BENCH_TAIL_RATE`` sets the rate (default 4,000 requests/s), ``BENCH_LAG_ROUNDS`` the rounds (2),
``BENCH_LAG_SECONDS`` the run (8 s after 2 s of warm-up).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROBE_SLEEP = 0.001
#: Lags kept one by one above this (seconds); shorter ones are only counted.
KEEP_ABOVE = 0.0005
LONG = 0.005  # a lag this long is a hold a request can feel (CPython's switch interval)


class _Probe:
    def __init__(self) -> None:
        self.ticks = 0
        self.lags: list[float] = []
        self.starved: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_started = 0.0
        self.started = 0.0
        self.task: asyncio.Task[None] | None = None

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks``: each collection's pause (a collection stops the thread that triggered it)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_started))

    async def run(self) -> None:
        self.started = time.perf_counter()
        gc.callbacks.append(self.on_gc)
        while True:
            before, cpu_before = time.perf_counter(), time.thread_time()
            await asyncio.sleep(PROBE_SLEEP)
            lag = time.perf_counter() - before - PROBE_SLEEP
            self.ticks += 1
            if lag > KEEP_ABOVE:
                # The part of the wait the loop's thread did not run: the GIL was elsewhere (or the OS ran
                # another process); the rest it spent on its own work (other requests), as bare does.
                self.lags.append(lag)
                self.starved.append(max(0.0, lag + PROBE_SLEEP - (time.thread_time() - cpu_before)))

    def save(self, path: str) -> None:
        seconds = time.perf_counter() - self.started
        figures = {"ticks": self.ticks, "seconds": seconds, "lags": self.lags, "starved": self.starved}
        figures["gc"] = self.gc_pauses
        Path(path).write_text(json.dumps(figures))


_probe = _Probe()


async def app(scope: Any, receive: Any, send: Any) -> None:
    """``bench.apps:app`` with the lag probe running in its event loop from lifespan start-up to shutdown."""
    from bench.apps import app as inner

    if scope["type"] != "lifespan":
        await inner(scope, receive, send)
        return

    async def receive_and_probe() -> Any:
        message = await receive()
        if message["type"] == "lifespan.startup" and _probe.task is None:
            _probe.task = asyncio.get_running_loop().create_task(_probe.run())
        elif message["type"] == "lifespan.shutdown" and _probe.task is not None:
            _probe.task.cancel()
            _probe.save(os.environ["BENCH_LAG_FILE"])
        return message

    await inner(scope, receive_and_probe, send)


def _summary(data: dict[str, Any], run_seconds: float) -> dict[str, float]:
    """Lag figures of one run in ms, from start-up to shutdown (the warm-up included, for every variant alike)."""
    lags = sorted(data["lags"])
    ticks = max(1, int(data["ticks"]))

    def quantile(q: float) -> float:
        # Ticks without a kept lag lagged less than KEEP_ABOVE: they fill the low end.
        index = int(q * ticks)
        short = ticks - len(lags)
        return 0.0 if index < short else lags[min(len(lags) - 1, index - short)] * 1000

    starved = sorted(data["starved"])
    pauses = [pause for _, pause in data["gc"]]
    return {
        "gc_max": max(pauses, default=0.0) * 1000,
        "gc_long_per_s": sum(1 for pause in pauses if pause >= LONG) / max(run_seconds, 1e-9),
        "starved_max": (starved[-1] * 1000) if starved else 0.0,
        "starved_long_per_s": sum(1 for gap in starved if gap >= LONG) / max(run_seconds, 1e-9),
        "p99": quantile(0.99),
        "p99.9": quantile(0.999),
        "max": (lags[-1] * 1000) if lags else 0.0,
        "long_per_s": sum(1 for lag in lags if lag >= LONG) / max(run_seconds, 1e-9),
    }


def main(argv: list[str]) -> int:
    from bench import servers, variants
    from bench.peers import Peers, free_port
    from bench.tail import ROOT, fixed_rate_wrk

    names = argv[0].split(",") if argv else ["bare", "obs-prod", "obs-all100"]
    rate = float(os.environ.get("BENCH_TAIL_RATE", "4000"))
    rounds = int(os.environ.get("BENCH_LAG_ROUNDS", "2"))
    seconds = float(os.environ.get("BENCH_LAG_SECONDS", "8"))
    server = servers.SERVERS["uvicorn"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with Peers() as peers:
        for round_no in range(rounds):
            for name in names:
                workdir = peers.workdir / f"lag-r{round_no}-{name}-{time.monotonic_ns()}"
                workdir.mkdir()
                port = free_port()
                peers.reset()
                env = variants.clean_environ(variants.get(name), peers.endpoints(workdir))
                env["BENCH_LAG_FILE"] = str(workdir / "lag.json")
                command = [arg if arg != "bench.apps:app" else "bench.looplag:app" for arg in server.command(port)]
                with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
                    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)
                try:
                    servers.wait_ready(proc, port)
                    fixed_rate_wrk(port, rate, 2)
                    figures, _ = fixed_rate_wrk(port, rate, seconds)
                finally:
                    servers.stop(proc)
                summary = _summary(json.loads((workdir / "lag.json").read_text()), seconds + 2)
                summary["request_p99"] = figures["p99_us"] / 1000
                results[name].append(summary)
                print(f"round {round_no + 1} {name}: {summary}", file=sys.stderr, flush=True)
    print(f"Event-loop lag under uvicorn at {rate:,.0f} requests/s (1 ms probe; median over {rounds} round(s))")
    print()
    print(
        "| variant | lag p99 ms | lag p99.9 ms | lag max ms | lags ≥ 5 ms a second "
        "| not running, max ms | not running ≥ 5 ms a second | GC pause max ms | request p99 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        runs = results[name]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        print(
            f"| `{name}` | {median('p99'):.2f} | {median('p99.9'):.2f} | {median('max'):.2f} | "
            f"{median('long_per_s'):.2f} | {median('starved_max'):.2f} | {median('starved_long_per_s'):.2f} | "
            f"{median('gc_max'):.2f} | {median('request_p99'):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
