"""The benchmark driver (issues 5 and 11); run it with ``bash bench/run.sh`` (or ``make bench``).

1. In-process table (``bench/inprocess.py``): each variant's app driven through ASGI in a fresh process,
   whole-process CPU µs per request over bare Litestar, with the spread of the repeats.
2. HTTP tables (``bench/overhttp.py``): ``wrk -t2 -c32`` against each server (``bench/servers.py``: uvicorn
   with uvloop + httptools first, then granian), one worker, every variant right after its own bare run.
3. Targets (PASS/MISS, never asserted in tests) and a comparison with what people pick instead.

Live peers (an OTLP/gRPC receiver, a Sentry ingest that also takes OTLP/HTTP) run in this process; dead
ones are a bound port where nothing listens. The markdown is printed and written to bench/results/latest.md.

Knobs (environment): BENCH_DURATION (s of wrk load per run, default 6), BENCH_ROUNDS (default 3),
BENCH_WARMUP (s, default 1), BENCH_ONLY (comma-separated variants), BENCH_SERVERS (default
``uvicorn,granian``; ``uvicorn-h11`` is the extra), BENCH_SKIP_HTTP=1, BENCH_SKIP_INPROCESS=1,
BENCH_INPROC_REQUESTS (default 20000), BENCH_INPROC_REPEATS (default 5). ``--list`` prints the variants.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from bench import inprocess, overhttp, report, servers, variants
from bench.peers import Peers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.md"
PRIMARY = "uvicorn"
SERVER_OVERHEAD_S = 1.5  # start, readiness, stop: roughly, per HTTP run


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


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for v in variants.VARIANTS:
            print(f"{v.name:24} {v.what}")
        return 0
    duration = env_number("BENCH_DURATION", 6, 1)
    rounds = int(env_number("BENCH_ROUNDS", 3, 1))
    warmup = env_number("BENCH_WARMUP", 1, 0)
    selected = variants.select(os.environ.get("BENCH_ONLY"))
    skip_http = os.environ.get("BENCH_SKIP_HTTP", "") not in ("", "0")
    skip_inprocess = os.environ.get("BENCH_SKIP_INPROCESS", "") not in ("", "0")
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
    primary_summary = by_server.get(PRIMARY)
    sections += ["## Targets", report.targets_section(results, primary_summary)]
    if results:
        sections += ["## How it compares", report.comparison_table(results, primary_summary)]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    sections.append(
        f"Generated by `bash bench/run.sh` in {(time.monotonic() - started) / 60:.1f} min; load average at the "
        f"end: {load}."
    )
    text = "\n\n".join(sections) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    log(f"bench: written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
