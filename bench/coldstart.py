"""Cold start (issue 22): what a new process pays before and around its first request, per variant.

Each run is a fresh ``python -m bench.coldstart --worker`` with the variant's environment (the same live or
dead peers as the other tables). The worker imports Litestar and what the variant's app needs, builds the
app, runs its lifespan start-up, answers one ``GET /users/42`` through ASGI, runs the lifespan shutdown and
exits. It times each phase with ``time.process_time()`` (CPU of every thread) and ``time.perf_counter()``.
The parent reads the whole process from ``os.wait4``: CPU (user + system, every thread, interpreter start
and exit included) and wall time from spawn to exit; the worker reports its peak RSS (``VmHWM``).

Every variant runs right after its own bare run, ``BENCH_COLD_ROUNDS`` times (reversed every other round);
"over bare" is the median over rounds of each run minus the bare run right before it, so a slow drift of
the shared machine cancels out. Standalone: ``.venv/bin/python -m bench.coldstart`` (honours BENCH_ONLY).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Phases the worker times, in order (interpreter start and exit are the rest of the whole-process figures).
PHASES = ("import", "build", "start-up", "first request", "shutdown")
RUN_TIMEOUT_S = 90.0


# --------------------------------------------------------------------------- the worker (one process)


def worker() -> None:
    """One cold start: import, build, lifespan start-up, one request, shutdown; phase times to a JSON file."""
    import asyncio  # the driver's own imports (standard library), before anything is timed

    from bench.inprocess import Lifespan, check_response

    name = os.environ["BENCH_VARIANT"]
    marks: list[tuple[float, float, float]] = [(time.process_time(), time.perf_counter(), _rss_mib("VmRSS"))]

    def mark() -> None:
        marks.append((time.process_time(), time.perf_counter(), _rss_mib("VmRSS")))

    import litestar  # noqa: F401  # the import phase: Litestar and what the variant's app needs

    from bench import apps

    apps.import_libraries(name)
    mark()
    app = apps.build(name)
    mark()

    async def drive() -> None:
        lifespan = Lifespan(app)
        await lifespan.startup()
        mark()
        await check_response(app)
        mark()
        await lifespan.shutdown()
        mark()

    asyncio.run(drive())
    phases = {
        phase: {"cpu_ms": (end[0] - start[0]) * 1e3, "wall_ms": (end[1] - start[1]) * 1e3, "rss_mib": end[2] - start[2]}
        for phase, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True)
    }
    with open(os.environ["BENCH_RESULT_FILE"], "w") as out:
        json.dump({"phases": phases, "peak_rss_mib": _rss_mib("VmHWM")}, out)


def _rss_mib(field: str) -> float:
    """This process's RSS now (``VmRSS``) or its peak since it was exec'd (``VmHWM``).

    Not ``ru_maxrss`` from ``wait4``: that counts the child from the fork on, so it would never read
    below the parent's own RSS (the parent holds the live peers).
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- the parent


def settings() -> tuple[int, bool]:
    """(rounds, quick): BENCH_COLD_ROUNDS (default 7; 3 with BENCH_QUICK=1)."""
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    raw = os.environ.get("BENCH_COLD_ROUNDS", "").strip()
    try:
        rounds = int(raw) if raw else (3 if quick else 7)
    except ValueError:
        raise SystemExit(f"BENCH_COLD_ROUNDS={raw!r}: expected an integer") from None
    if rounds < 1:
        raise SystemExit("BENCH_COLD_ROUNDS must be at least 1")
    return rounds, quick


@dataclass
class Sample:
    """One process: whole-process CPU and wall (ms), peak RSS (MiB), and the worker's own phase times."""

    cpu_ms: float = 0.0
    wall_ms: float = 0.0
    rss_mib: float = 0.0
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    failure: str | None = None


def run_once(variant: Any, peers: Any, tag: str) -> Sample:
    """Spawn one worker for ``variant`` and read its whole-process figures from ``os.wait4``."""
    import subprocess
    import threading

    from bench import variants

    workdir = peers.workdir / f"cold-{variant.name}{tag}"
    workdir.mkdir(exist_ok=True)
    result_file = workdir / "result.json"
    env = variants.clean_environ(variant, peers.endpoints(workdir))
    env["BENCH_RESULT_FILE"] = str(result_file)
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.coldstart", "--worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        killer = threading.Timer(RUN_TIMEOUT_S, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    sample = Sample(cpu_ms=(usage.ru_utime + usage.ru_stime) * 1e3, wall_ms=wall * 1e3)
    try:
        written = json.loads(result_file.read_text())
        sample.phases, sample.rss_mib = written["phases"], written["peak_rss_mib"]
    except (OSError, ValueError, KeyError):
        lines = (workdir / "stderr.log").read_text(errors="replace").strip().splitlines()
        sample.failure = f"worker exited {proc.returncode}: {(lines or ['no output'])[-1][:200]}"
    return sample


@dataclass
class ColdResult:
    """Every run of one variant, and each run's difference with the bare run right before it."""

    variant: Any
    samples: list[Sample] = field(default_factory=list)
    over_bare: dict[str, list[float]] = field(default_factory=dict)
    """"cpu_ms", "wall_ms", "rss_mib": per round, this run minus the bare run right before it."""

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.failure is None]

    def median(self, attr: str) -> float:
        import statistics

        values = [float(getattr(s, attr)) for s in self.ok]
        return statistics.median(values) if values else float("nan")

    def phase(self, name: str, kind: str = "cpu_ms") -> float:
        import statistics

        values = [s.phases[name][kind] for s in self.ok if name in s.phases]
        return statistics.median(values) if values else float("nan")

    def delta(self, attr: str) -> float | None:
        import statistics

        values = self.over_bare.get(attr)
        return statistics.median(values) if values else None

    def failure(self) -> str:
        return "; ".join(sorted({s.failure for s in self.samples if s.failure}))[:200]


def run_all(selected: list[Any], peers: Any, rounds: int, log: Any = None) -> dict[str, ColdResult]:
    """Every selected variant right after its own bare run, ``rounds`` times; by name, bare first."""
    from bench import variants
    from bench.variants import BARE

    bare = variants.get(BARE)
    others = [v for v in selected if v.name != BARE]
    results: dict[str, ColdResult] = {BARE: ColdResult(bare)}
    results.update({v.name: ColdResult(v) for v in others})
    for round_no in range(1, rounds + 1):
        for v in others if round_no % 2 else others[::-1]:
            base = run_once(bare, peers, f"-r{round_no}-before-{v.name}")
            results[BARE].samples.append(base)
            sample = run_once(v, peers, f"-r{round_no}")
            results[v.name].samples.append(sample)
            if base.failure is None and sample.failure is None:
                for attr in ("cpu_ms", "wall_ms", "rss_mib"):
                    results[v.name].over_bare.setdefault(attr, []).append(getattr(sample, attr) - getattr(base, attr))
            if log is not None:
                status = sample.failure or (
                    f"CPU {sample.cpu_ms:6.0f} ms (bare {base.cpu_ms:4.0f}), wall {sample.wall_ms:6.0f} ms, "
                    f"peak RSS {sample.rss_mib:5.1f} MiB (bare {base.rss_mib:4.1f}); RSS by phase "
                    + " ".join(f"{p.get('rss_mib', 0.0):+.1f}" for p in sample.phases.values())
                )
                log(f"  cold {round_no}/{rounds} {v.name:24} {status}")
        if not others:
            results[BARE].samples.append(run_once(bare, peers, f"-r{round_no}"))
    return results


def main(argv: list[str]) -> int:
    if "--worker" in argv:
        worker()
        return 0
    from bench import variants
    from bench.peers import Peers
    from bench.report import coldstart_table

    rounds, _ = settings()
    selected = variants.select(os.environ.get("BENCH_ONLY"))
    with Peers() as peers:
        results = run_all(selected, peers, rounds, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(coldstart_table(results, rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
