"""The benchmark driver (issue 5); run it with ``bash bench/run.sh`` (or ``make bench``).

For every variant (see ``bench/variants.py``) it starts the same app under uvicorn, one worker, on
127.0.0.1, loads it with ``wrk -t2 -c32 -d<N>s --latency`` and runs bare Litestar right before it, so each
variant's throughput is a ratio to the bare run beside it (median over rounds). Per run it reads the server
process's CPU time (utime+stime in /proc/<pid>/stat) and VmRSS around the measured load, counts its stderr
lines, and counts what reached the live peers. Then it checks the targets, runs the in-process per-feature
table (``bench/inprocess.py``), prints markdown and writes it to ``bench/results/latest.md``.

Knobs: BENCH_DURATION (s, default 10), BENCH_ROUNDS (default 2), BENCH_WARMUP (s, default 1), BENCH_ONLY
(comma-separated variant names), BENCH_SKIP_HTTP=1, BENCH_SKIP_INPROCESS=1, BENCH_INPROC_REQUESTS,
BENCH_INPROC_REPEATS. ``--list`` prints the variants.
"""

from __future__ import annotations

import datetime as dt
import http.client
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import inprocess, variants
from bench.peers import Peers, free_port
from bench.variants import BARE, Variant

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.md"
WRK_THREADS, WRK_CONNECTIONS = 2, 32
PATH = "/users/42"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The targets: (variant, minimum ratio to bare in the same run).
TARGETS = (
    ("obs-latency", 0.90, "latency records only"),
    ("obs-prod", 0.80, "production default"),
    ("obs-all100", 0.50, "everything at 100% sampling to a live collector"),
)
DEAD, LIVE, DEAD_MIN = "obs-all100-dead", "obs-all100", 0.90


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


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
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
    stderr_head: list[str] = field(default_factory=list)
    failure: str | None = None


_DURATION_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests, req/s, p50/p99 (ms) and errors from ``wrk --latency`` output."""
    out: dict[str, float] = {}
    if m := re.search(r"(\d+) requests in ", output):
        out["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        out["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        if m := re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", output, re.MULTILINE):
            out[f"p{pct}"] = _ms(m.group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(g) for g in m.groups())
    out["errors"] = errors
    missing = {"requests", "rps", "p50", "p99"} - set(out)
    if missing:
        raise ValueError(f"wrk output lacks {sorted(missing)}:\n{output}")
    return out


def wrk(port: int, seconds: float) -> dict[str, float]:
    cmd = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        f"http://127.0.0.1:{port}{PATH}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before serving")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", PATH)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    return
                raise RuntimeError(f"GET {PATH} answered {response.status}")
            finally:
                conn.close()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within {START_TIMEOUT:.0f}s") from None
            time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> tuple[float, bool]:
    """SIGINT (uvicorn's graceful shutdown, which runs the lifespan exit); SIGKILL after STOP_TIMEOUT."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return time.monotonic() - started, True
    return time.monotonic() - started, False


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def run_variant(variant: Variant, round_no: int, peers: Peers, duration: float, warmup: float) -> Run:
    run = Run(variant.name, round_no)
    workdir = peers.workdir / f"r{round_no}-{variant.name}"
    workdir.mkdir()
    env = variants.clean_environ(variant, peers.endpoints(workdir))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.apps:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    stderr_path = workdir / "stderr.log"
    peers.reset()
    with (workdir / "stdout.log").open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        wait_ready(proc, port)
        run.sent = 1
        if warmup > 0:
            run.sent += int(wrk(port, warmup)["requests"])
        cpu_before, rss_before = cpu_seconds(proc.pid), rss_kib(proc.pid)
        result = wrk(port, duration)
        cpu_after, rss_after = cpu_seconds(proc.pid), rss_kib(proc.pid)
        run.requests = int(result["requests"])
        run.sent += run.requests
        run.rps, run.p50_ms, run.p99_ms = result["rps"], result["p50"], result["p99"]
        run.errors = int(result["errors"])
        run.cpu_us_per_req = (cpu_after - cpu_before) * 1e6 / max(run.requests, 1)
        run.rss_growth_mib = (rss_after - rss_before) / 1024
    except Exception as exc:
        run.failure = str(exc).splitlines()[0][:200]
    finally:
        run.stop_s, run.killed = stop_server(proc)
    lines = stderr_path.read_text(errors="replace").splitlines()
    run.log_lines = len(lines)
    run.stderr_head = [line[:200] for line in lines[:6]]
    if run.failure and lines:
        run.failure += f" (stderr: {lines[-1][:200]})"
    if variant.app == "obs":
        run.delivered["rec"] = count_lines(workdir / "metrics.jsonl")
    elif variant.app == "naive-logging":
        run.delivered["rec"] = count_lines(workdir / "naive.jsonl")
    counts = peers.counts()
    if variant.uses_otlp:
        run.delivered["spans"] = counts["spans"]
    if variant.uses_sentry:
        run.delivered["sentry"] = counts["sentry"]
    shutil.rmtree(workdir, ignore_errors=True)
    return run


# --------------------------------------------------------------------------- tables


def md_table(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(header)))
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Summary:
    variant: Variant
    runs: list[Run]
    ratio: float | None  # median over rounds of rps / rps of the bare run just before


def summarise(selected: list[Variant], runs: list[Run]) -> dict[str, Summary]:
    summaries: dict[str, Summary] = {}
    for v in selected:
        mine = [r for r in runs if r.variant == v.name and r.failure is None]
        ratios: list[float] = []
        if v.name != BARE:
            for i, r in enumerate(runs):
                if r.variant != v.name or r.failure is not None or i == 0:
                    continue
                bare = runs[i - 1]
                if bare.variant == BARE and bare.failure is None and bare.rps > 0:
                    ratios.append(r.rps / bare.rps)
        ratio = 1.0 if v.name == BARE and mine else (median(ratios) if ratios else None)
        summaries[v.name] = Summary(v, mine, ratio)
    return summaries


def _delivered(s: Summary) -> str:
    if not s.runs:
        return ""
    parts = []
    for key in ("rec", "spans", "sentry"):
        per_request = [r.delivered[key] / r.sent for r in s.runs if key in r.delivered and r.sent]
        if per_request:
            parts.append(f"{key} {median(per_request):.2f}")
    return " · ".join(parts)


def http_table(summaries: dict[str, Summary], all_runs: list[Run]) -> str:
    header = [
        "variant",
        "req/s",
        "x bare",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "RSS Δ MiB",
        "log lines",
        "stop s",
        "delivered / req",
    ]
    rows: list[list[str]] = []
    for name, s in summaries.items():
        if not s.runs:
            failures = sorted({r.failure or "" for r in all_runs if r.variant == name})
            rows.append([f"`{name}`", "failed", "", "", "", "", "", "", "", "; ".join(failures)[:200]])
            continue
        runs = s.runs
        errors = sum(r.errors for r in runs)
        killed = any(r.killed for r in runs)
        rows.append(
            [
                f"`{name}`",
                f"{median([r.rps for r in runs]):,.0f}",
                "" if s.ratio is None else f"{s.ratio:.2f}",
                f"{median([r.p50_ms for r in runs]):.2f}",
                f"{median([r.p99_ms for r in runs]):.2f}",
                f"{median([r.cpu_us_per_req for r in runs]):.0f}",
                f"{median([r.rss_growth_mib for r in runs]):+.1f}",
                str(max(r.log_lines for r in runs)),
                f"{median([r.stop_s for r in runs]):.1f}" + (" (killed)" if killed else ""),
                _delivered(s) + (f" · {errors} non-2xx/socket errors" if errors else ""),
            ]
        )
    return md_table(header, rows)


def targets_section(summaries: dict[str, Summary]) -> str:
    lines = []

    def ratio(name: str) -> float | None:
        s = summaries.get(name)
        return None if s is None else s.ratio

    for name, minimum, label in TARGETS:
        value = ratio(name)
        if value is None:
            lines.append(f"- n/a  `{name}` ({label}) ≥ {minimum:.2f} x bare: not run")
        else:
            verdict = "PASS" if value >= minimum else "MISS"
            lines.append(f"- {verdict} `{name}` ({label}) ≥ {minimum:.2f} x bare: {value:.2f}")
    dead, live = ratio(DEAD), ratio(LIVE)
    if dead is None or live is None:
        lines.append(f"- n/a  `{DEAD}` within 10% of `{LIVE}`: needs both variants")
    else:
        relative = dead / live
        verdict = "PASS" if relative >= DEAD_MIN else "MISS"
        log_lines = max(r.log_lines for r in summaries[DEAD].runs)
        lines.append(
            f"- {verdict} `{DEAD}` within 10% of `{LIVE}` (dead ≥ {DEAD_MIN:.2f} x live): "
            f"{dead:.2f} vs {live:.2f} x bare = {relative:.2f}; log lines: {log_lines}"
        )
    samples = []
    for name in (DEAD, "litestar-otel-dead", "sentry-litestar-dead"):
        s = summaries.get(name)
        if s is not None and s.runs and s.runs[-1].stderr_head:
            head = "\n".join(f"    {line}" for line in s.runs[-1].stderr_head)
            samples.append(f"`{name}` stderr, first lines (of {s.runs[-1].log_lines}):\n\n{head}")
    return "\n".join(lines) + ("\n\n" + "\n\n".join(samples) if samples else "")


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_section(duration: float, rounds: int, warmup: float) -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0))
    wrk_version = "?"
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
        wrk_version = (done.stdout or done.stderr).split("[")[0].strip().removeprefix("wrk ").strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    load = Path("/proc/loadavg").read_text().split()[:3]
    versions = ", ".join(
        f"{d} {_version(d)}" for d in ("litestar", "uvicorn", "sentry-sdk", "opentelemetry-sdk", "msgspec")
    )
    return "\n".join(
        [
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- nproc: {nproc}; CPU: {model}",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), {platform.system()} "
            f"{platform.release()}",
            f"- {versions}; uvicorn loop {loop}, http {http}; wrk {wrk_version}",
            f"- load: `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{round(duration)}s --latency` on `GET {PATH}`, "
            f"{rounds} round(s), {warmup:g}s warm-up per run; server `uvicorn --workers 1 --no-access-log "
            f"--log-level warning` on 127.0.0.1; peers in the driver process",
            f"- load average at start: {' '.join(load)}",
        ]
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for v in variants.VARIANTS:
            print(f"{v.name:22} {v.what}")
        return 0
    duration = env_number("BENCH_DURATION", 10, 1)
    rounds = int(env_number("BENCH_ROUNDS", 2, 1))
    warmup = env_number("BENCH_WARMUP", 1, 0)
    selected = variants.select(os.environ.get("BENCH_ONLY"))
    skip_http = os.environ.get("BENCH_SKIP_HTTP", "") not in ("", "0")
    skip_inprocess = os.environ.get("BENCH_SKIP_INPROCESS", "") not in ("", "0")
    if shutil.which("wrk") is None and not skip_http:
        raise SystemExit("wrk is not installed; run bash bench/run.sh, which installs it")

    sections = [
        "# litestar-omnii-obs benchmark",
        "## Machine",
        machine_section(duration, rounds, warmup),
        "## Variants",
        "\n".join(f"- `{v.name}`: {v.what}" for v in selected),
    ]
    others = [v for v in selected if v.name != BARE]
    with Peers() as peers:
        if not skip_http:
            n_runs = rounds * 2 * max(len(others), 1)
            log(
                f"bench: {n_runs} uvicorn runs of {duration:g}s (+{warmup:g}s warm-up), "
                f"about {n_runs * (duration + warmup + 4) / 60:.0f} min"
            )
            runs: list[Run] = []
            order = others or [selected[0]]
            for round_no in range(1, rounds + 1):
                for v in order:
                    pair = [variants.get(BARE)] + ([v] if v.name != BARE else [])
                    for each in pair:
                        run = run_variant(each, round_no, peers, duration, warmup)
                        runs.append(run)
                        status = run.failure or (
                            f"{run.rps:,.0f} req/s, p99 {run.p99_ms:.2f} ms, {run.cpu_us_per_req:.0f} µs CPU/req, "
                            f"{run.log_lines} log lines"
                        )
                        log(f"  round {round_no}/{rounds} {each.name:22} {status}")
            summaries = summarise(selected, runs)
            sections += [
                "## Over HTTP (uvicorn + wrk)",
                "Median over rounds; `x bare` is the median of each run's req/s over the bare run right before "
                "it. CPU is the server process's utime+stime per request; RSS Δ is VmRSS after minus before "
                "the measured load; log lines are the server's stderr lines; delivered is what reached the "
                "metrics file / OTLP receiver / Sentry ingest per request sent (wrk does not count the requests still "
                "in flight when it stops, so slightly above 1 is expected).",
                http_table(summaries, runs),
                "## Targets",
                targets_section(summaries),
            ]
        if not skip_inprocess:
            log("bench: in-process per-feature cost")
            sections += ["## In-process (ASGI, no network)", inprocess.run_all(selected, peers)]
    report = "\n\n".join(sections) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    log(f"bench: written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
