"""The benchmark driver (issues 5 and 11); run it with ``bash bench/run.sh`` (or ``make bench``).

1. In-process table (``bench/inprocess.py``): each variant's app driven through ASGI in a fresh process,
   whole-process CPU µs per request over bare Litestar, with the spread of the repeats.
2. HTTP tables (``bench/overhttp.py``): ``wrk -t2 -c32`` against each server (``bench/servers.py``: uvicorn
   with uvloop + httptools first, then granian), one worker, every variant right after its own bare run.
3. Cold start (``bench/coldstart.py``, issue 22): import, build, lifespan start-up, first request, shutdown
   and peak RSS of a fresh process per run, each variant right after its own bare run.
4. Fixed-rate tail latency (``bench/tail.py``, issue 22): p50/p99/p99.9 on uvicorn at a third of bare's
   saturation throughput, wrk on a fixed schedule (``bench/fixed_rate.lua``), its own CPU shown.
5. Targets (PASS/MISS, never asserted in tests) and a comparison with what people pick instead.

Live peers (an OTLP/gRPC receiver, a Sentry ingest that also takes OTLP/HTTP) run in this process; dead
ones are a bound port where nothing listens. The markdown is printed and written to bench/results/latest.md.

Knobs (environment): BENCH_DURATION (s of wrk load per run, default 6), BENCH_ROUNDS (default 3),
BENCH_WARMUP (s, default 1), BENCH_ONLY (comma-separated variants), BENCH_SERVERS (default
``uvicorn,granian``; ``uvicorn-h11`` is the extra), BENCH_SKIP_HTTP=1, BENCH_SKIP_INPROCESS=1,
BENCH_INPROC_REQUESTS (default 20000), BENCH_INPROC_REPEATS (default 5), BENCH_SKIP_COLD=1,
BENCH_COLD_ROUNDS (default 7), BENCH_SKIP_TAIL=1, BENCH_TAIL_RATE (req/s; default a third of bare's
saturation), BENCH_TAIL_DURATION (s, default 6), BENCH_TAIL_ROUNDS (default 1). BENCH_QUICK=1 is a smoke
run: every table, short (see :data:`QUICK`). ``--list`` prints the variants.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from bench import coldstart, inprocess, overhttp, report, servers, tail, variants
from bench.peers import Peers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.md"
PRIMARY = "uvicorn"
SERVER_OVERHEAD_S = 1.5  # start, readiness, stop: roughly, per HTTP run
#: BENCH_QUICK=1: defaults for a smoke run of every table (a variable set explicitly still wins).
QUICK = {
    "BENCH_DURATION": "2",
    "BENCH_ROUNDS": "1",
    "BENCH_WARMUP": "0.5",
    "BENCH_INPROC_REQUESTS": "2000",
    "BENCH_INPROC_REPEATS": "2",
    "BENCH_COLD_ROUNDS": "2",
    "BENCH_TAIL_DURATION": "2",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env_number(name: str, default: float, low: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a number") from None
    if value < low:
        raise SystemExit(f"{name}={raw!r}: expected at least {low}")
    return value


def server_list() -> list[servers.Server]:
    raw = os.environ.get("BENCH_SERVERS", "").strip() or "uvicorn,granian"
    out = []
    for name in (n.strip() for n in raw.split(",")):
        if name and name not in servers.SERVERS:
            raise SystemExit(f"BENCH_SERVERS: unknown server {name!r}; known: {', '.join(servers.SERVERS)}")
        if name:
            out.append(servers.SERVERS[name])
    return out


def _knobs() -> str:
    """The BENCH_* variables this run was given (what makes it differ from a plain ``make bench``)."""
    return ", ".join(f"`{k}={v}`" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for v in variants.VARIANTS:
            print(f"{v.name:24} {v.what}")
        return 0
    if os.environ.get("BENCH_QUICK", "") not in ("", "0"):
        for name, value in QUICK.items():
            os.environ.setdefault(name, value)
    duration = env_number("BENCH_DURATION", 6, 1)
    rounds = int(env_number("BENCH_ROUNDS", 3, 1))
    warmup = env_number("BENCH_WARMUP", 1, 0)
    selected = variants.select(os.environ.get("BENCH_ONLY"))
    skip_http = os.environ.get("BENCH_SKIP_HTTP", "") not in ("", "0")
    skip_inprocess = os.environ.get("BENCH_SKIP_INPROCESS", "") not in ("", "0")
    skip_cold = os.environ.get("BENCH_SKIP_COLD", "") not in ("", "0")
    skip_tail = os.environ.get("BENCH_SKIP_TAIL", "") not in ("", "0")
    if not skip_tail and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; run bash bench/run.sh, which installs it")
    chosen = [] if skip_http else server_list()
    if chosen and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; run bash bench/run.sh, which installs it")

    started = time.monotonic()
    sections = ["# litestar-omnii-obs benchmark", "## Machine", report.machine_section()]
    requests, repeats = inprocess.settings()
    sections += [
        "## Variants",
        "Our plugin is configured only through the environment (`ObservabilityConfig.from_env()`); every "
        "variant, anchors included, runs in a fresh process.\n\n"
        + "\n".join(f"- `{v.name}`: {v.what}" for v in selected),
    ]
    results: dict[str, inprocess.Result] = {}
    by_server: dict[str, dict[str, overhttp.Summary]] = {}
    all_runs: dict[str, list[overhttp.Run]] = {}
    cold: dict[str, coldstart.ColdResult] = {}
    tails: dict[str, tail.TailSummary] = {}
    tail_section: list[str] = []
    with Peers() as peers:
        if not skip_inprocess:
            log(f"bench: in-process, {len(selected) + 1} processes of {requests * repeats} requests")
            results = inprocess.run_all(selected, peers, log=log)
            sections += [
                "## In-process (ASGI driven directly, no network)",
                f"{requests * repeats} sequential `GET /users/42` per variant in {repeats} repeats of {requests}, "
                "each in a fresh process with its lifespan started, after 1000 warm-up requests.\n\n"
                + report.inprocess_table(results),
            ]
        if chosen:
            per_server = rounds * 2 * max(len(selected) - 1, 1)
            total = per_server * len(chosen)
            log(
                f"bench: {total} server runs of {duration:g}s (+{warmup:g}s warm-up) on "
                f"{', '.join(s.name for s in chosen)}, about "
                f"{total * (duration + warmup + SERVER_OVERHEAD_S) / 60:.0f} min"
            )
            for server in chosen:
                runs = overhttp.run_series(server, selected, peers, rounds, duration, warmup, log)
                all_runs[server.name] = runs
                by_server[server.name] = overhttp.summarise(selected, runs)
        if not skip_cold:
            cold_rounds, _ = coldstart.settings()
            log(f"bench: cold start, {cold_rounds} round(s) of {2 * (len(selected) - 1)} fresh processes")
            cold = coldstart.run_all(selected, peers, cold_rounds, log=log)
        if not skip_tail:
            tail_duration, tail_warmup, tail_rounds, rate = tail.settings()
            primary_server = servers.SERVERS[PRIMARY]
            if rate is None:
                rate = tail.saturation_rate(primary_server, peers)
            runs_per_round = 2 * len(selected) - 1
            log(
                f"bench: fixed-rate tail latency at {rate:,.0f} req/s, {tail_rounds * runs_per_round} runs of "
                f"{tail_duration:g}s, about "
                f"{tail_rounds * runs_per_round * (tail_duration + tail_warmup + SERVER_OVERHEAD_S) / 60:.0f} min"
            )
            tail_runs = tail.run_series(
                primary_server, selected, peers, rate, tail_rounds, tail_duration, tail_warmup, log
            )
            tails = tail.summarise(selected, tail_runs)
            tail_section = [
                "## Fixed-rate tail latency",
                report.tail_table(tails, rate, tail_duration, tail_rounds),
            ]
    first = chosen[0].name if chosen else None
    if first is not None:
        primary = by_server[first]
        sections += [
            f"## Over HTTP: {servers.SERVERS[first].label}",
            f"`wrk -t{servers.WRK_THREADS} -c{servers.WRK_CONNECTIONS} -d{round(duration)}s --latency` on "
            f"`GET {servers.PATH}`, {rounds} round(s), {warmup:g}s warm-up per run, 1 worker, no access log, "
            "log level warning. Median over rounds; share of bare is each run's req/s over the bare run right "
            "before it. CPU is the server's (all processes and threads) per request, and over bare the difference "
            "with the bare run right before it; log lines are what the "
            "server printed besides metric records; delivered is per request sent (wrk does not count those "
            "in flight when it stops, so slightly above 1 is expected).\n\n"
            + report.http_table(primary, all_runs[first]),
            "### Dead collector, dead Sentry",
            report.dead_section(primary),
        ]
        if len(chosen) > 1:
            others = {name: by_server[name] for name in by_server if name != first}
            sections += [
                "## Over HTTP: other servers",
                "; ".join(f"`{name}`: {servers.SERVERS[name].label}" for name in others)
                + ". Same load and interleaving.\n\n"
                + report.other_servers_table(others),
            ]
    if cold:
        cold_rounds, _ = coldstart.settings()
        sections += ["## Cold start", report.coldstart_table(cold, cold_rounds)]
    sections += tail_section
    primary_summary = by_server.get(PRIMARY)
    sections += ["## Targets", report.targets_section(results, primary_summary, cold, tails)]
    if results:
        sections += ["## How it compares", report.comparison_table(results, primary_summary)]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    sections.append(
        f"Generated by `bash bench/run.sh` in {(time.monotonic() - started) / 60:.1f} min; load average at the "
        f"end: {load}." + (f" Settings: {knobs}." if (knobs := _knobs()) else "")
    )
    text = "\n\n".join(sections) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    log(f"bench: written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
