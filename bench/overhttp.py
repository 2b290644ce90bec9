"""The HTTP table: every variant under a real server, loaded by wrk, interleaved with bare Litestar.

For each server and round the order is bare, X, bare, Y, ... (reversed every other round): each variant's
throughput is a share of the bare run right before it (median over rounds). Per run: the server's CPU time
(every process and thread) and RSS around the measured load, its log lines (stderr plus any stdout line
that is not a metric record), and what reached the metrics sink and the live peers.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import servers, variants
from bench.peers import Peers, free_port
from bench.variants import BARE, Variant

__all__ = ["Run", "Summary", "run_series", "summarise"]

ROOT = Path(__file__).resolve().parent.parent
RECORD = b'"metric":"api_latency"'


@dataclass
class Run:
    server: str
    variant: str
    round_no: int
    rps: float = 0.0
    requests: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    cpu_us_per_req: float = 0.0
    rss_growth_mib: float = 0.0
    log_lines: int = 0
    stop_s: float = 0.0
    killed: bool = False
    sent: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    log_head: list[str] = field(default_factory=list)
    failure: str | None = None


def _read_output(workdir: Path) -> tuple[int, list[str]]:
    """(metric records, log lines) of a server: records are stdout's api_latency lines, the rest is log."""
    records, logs = 0, []
    for name in ("stdout.log", "stderr.log"):
        path = workdir / name
        if not path.exists():
            continue
        with path.open("rb") as f:
            for line in f:
                if RECORD in line:
                    records += 1
                elif line.strip():
                    logs.append(line.decode(errors="replace").rstrip()[:200])
    return records, logs


def run_variant(
    server: servers.Server, variant: Variant, round_no: int, peers: Peers, duration: float, warmup: float
) -> Run:
    run = Run(server.name, variant.name, round_no)
    workdir = peers.workdir / f"{server.name}-r{round_no}-{variant.name}"
    workdir.mkdir()
    env = variants.clean_environ(variant, peers.endpoints(workdir))
    port = free_port()
    peers.reset()
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            server.command(port),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        servers.wait_ready(proc, port)
        run.sent = 1
        if warmup > 0:
            run.sent += int(servers.wrk(port, warmup)["requests"])
        cpu_before, rss_before = servers.cpu_seconds(proc.pid), servers.rss_kib(proc.pid)
        result = servers.wrk(port, duration)
        cpu_after, rss_after = servers.cpu_seconds(proc.pid), servers.rss_kib(proc.pid)
        run.requests = int(result["requests"])
        run.sent += run.requests
        run.rps, run.p50_ms, run.p99_ms = result["rps"], result["p50"], result["p99"]
        run.errors = int(result["errors"])
        run.cpu_us_per_req = (cpu_after - cpu_before) * 1e6 / max(run.requests, 1)
        run.rss_growth_mib = (rss_after - rss_before) / 1024
    except Exception as exc:
        run.failure = str(exc).splitlines()[0][:200]
    finally:
        run.stop_s, run.killed = servers.stop(proc)
    records, logs = _read_output(workdir)
    run.log_lines, run.log_head = len(logs), logs[:6]
    if run.failure and logs:
        errors = [line for line in logs if "Error" in line or "error" in line or "Traceback" in line]
        run.failure += f" (log: {(errors or logs)[-1]})"
    if variant.app == "obs":
        run.delivered["rec"] = records
    counts = peers.counts()
    if variant.uses_otlp:
        run.delivered["spans"] = counts["spans"]
    if variant.uses_sentry:
        run.delivered["sentry"] = counts["sentry"]
        run.delivered["sentry spans"] = counts["sentry spans"]
    shutil.rmtree(workdir, ignore_errors=True)
    return run


def run_series(
    server: servers.Server,
    selected: list[Variant],
    peers: Peers,
    rounds: int,
    duration: float,
    warmup: float,
    log: Callable[[str], None],
) -> list[Run]:
    """Every selected variant on ``server``, each right after its own bare run, ``rounds`` times."""
    runs: list[Run] = []
    others = [v for v in selected if v.name != BARE] or [variants.get(BARE)]
    for round_no in range(1, rounds + 1):
        # Every other round in reverse order, so a slow drift of the machine does not favour the first variants.
        for v in others if round_no % 2 else others[::-1]:
            for each in [variants.get(BARE)] + ([v] if v.name != BARE else []):
                run = run_variant(server, each, round_no, peers, duration, warmup)
                runs.append(run)
                status = run.failure or (
                    f"{run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} p99 {run.p99_ms:.2f} ms, "
                    f"{run.cpu_us_per_req:.0f} µs CPU/req, {run.log_lines} log lines"
                )
                log(f"  {server.name} {round_no}/{rounds} {each.name:24} {status}")
    return runs


# --------------------------------------------------------------------------- summaries


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Summary:
    variant: Variant
    runs: list[Run]
    vs_bare: dict[str, float] = field(default_factory=dict)
    """Median over rounds of each run's rps, p50 and p99 over those of the bare run right before it."""
    cpu_over_bare: float | None = None
    """Median over rounds of each run's server CPU µs per request minus that of the bare run right before it."""

    @property
    def ok(self) -> bool:
        return bool(self.runs)

    @property
    def share(self) -> float | None:
        """Share of bare's throughput."""
        return self.vs_bare.get("rps")

    def med(self, attr: str) -> float:
        return median([float(getattr(r, attr)) for r in self.runs])

    def delivered(self, key: str) -> float | None:
        values = [r.delivered[key] / r.sent for r in self.runs if key in r.delivered and r.sent]
        return median(values) if values else None


def summarise(selected: list[Variant], runs: list[Run]) -> dict[str, Summary]:
    summaries: dict[str, Summary] = {}
    for v in selected:
        mine = [r for r in runs if r.variant == v.name and r.failure is None]
        pairs: list[tuple[Run, Run]] = []
        for i, r in enumerate(runs):
            if v.name == BARE or r.variant != v.name or r.failure is not None or i == 0:
                continue
            bare = runs[i - 1]
            if bare.variant == BARE and bare.failure is None and bare.rps > 0 and bare.p50_ms > 0:
                pairs.append((r, bare))
        summary = Summary(v, mine)
        if v.name == BARE and mine:
            summary.vs_bare = {"rps": 1.0, "p50_ms": 1.0, "p99_ms": 1.0}
            summary.cpu_over_bare = 0.0
        elif pairs:
            summary.cpu_over_bare = median([r.cpu_us_per_req - bare.cpu_us_per_req for r, bare in pairs])
            summary.vs_bare = {
                attr: median([getattr(r, attr) / getattr(bare, attr) for r, bare in pairs])
                for attr in ("rps", "p50_ms", "p99_ms")
            }
        summaries[v.name] = summary
    return summaries


def failures(name: str, runs: list[Run]) -> str:
    return "; ".join(sorted({r.failure or "" for r in runs if r.variant == name}))[:200]
