"""The markdown: machine and versions, the in-process table, the HTTP tables, targets, the comparison."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.coldstart import PHASES, ColdResult
from bench.inprocess import Result
from bench.overhttp import Run, Summary, failures
from bench.servers import PATH
from bench.tail import LOAD_GENERATOR, P50_MAX, PERCENTILES, UNDERLOADED, TailSummary
from bench.variants import BARE, FEATURES, VARIANTS

DEAD_MAX = 1.10  # a dead-peer variant's p50 and p99 at most 10% above the same config with live peers
DEAD_MAX_LINES = 5  # and a handful of log lines in all
VERSIONS = (
    "litestar",
    "sentry-sdk",
    "opentelemetry-sdk",
    "uvicorn",
    "uvloop",
    "httptools",
    "granian",
    "logfire",
    "opentelemetry-instrumentation-asgi",
    "prometheus-client",
    "msgspec",
)
_DELIVERED = (("rec", "rec"), ("spans", "spans"), ("sentry", "sentry env"), ("sentry spans", "sentry spans"))


def md_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    align = ["---" if i < left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --------------------------------------------------------------------------- machine


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_section() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = "?"
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
        wrk_version = (done.stdout or done.stderr).split("[")[0].strip().removeprefix("wrk ").strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")),
        "0",
    )
    return "\n".join(
        [
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- nproc: {len(os.sched_getaffinity(0))}; CPU: {model}; memory {int(memory) / 2**20:.0f} GiB",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), {platform.system()} "
            f"{platform.release()}",
            "- " + ", ".join(f"{d} {version(d)}" for d in VERSIONS) + f"; wrk {wrk_version}",
            f"- load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        ]
    )


# --------------------------------------------------------------------------- in-process


def bare_us(results: dict[str, Result]) -> float | None:
    bare = results.get(BARE)
    return statistics.median(bare.cpu) if bare is not None and bare.cpu else None


def over_bare(results: dict[str, Result], name: str) -> float | None:
    base, result = bare_us(results), results.get(name)
    if base is None or result is None or not result.cpu:
        return None
    return statistics.median(result.cpu) - base


def _delivered(get: Callable[[str], float | None]) -> str:
    parts = []
    for key, label in _DELIVERED:
        value = get(key)
        if value is not None:
            parts.append(f"{label} {value:.2f}")
    return " · ".join(parts)


def inprocess_table(results: dict[str, Result]) -> str:
    base = bare_us(results)
    rows: list[list[str]] = []
    for name, r in results.items():
        if r.failure or not r.cpu:
            rows.append([f"`{name}`", "failed", "", "", "", "", "", (r.failure or "no samples")[:200]])
            continue
        us = statistics.median(r.cpu)
        added = spread = target = ""
        if base is not None:
            added = f"{us - base:+.1f}"
            spread = f"{min(r.cpu) - base:+.1f} … {max(r.cpu) - base:+.1f}"
            if r.variant.target_us is not None:
                target = f"≤ +{r.variant.target_us:g}: {verdict(us - base <= r.variant.target_us)}"
        rows.append(
            [
                f"`{name}`",
                f"{us:.1f}",
                added,
                spread,
                target,
                f"{statistics.median(r.wall):.1f}",
                str(r.log_lines),
                _delivered(r.needs_request_setup),
            ]
        )
    header = ["variant", "CPU µs/req", "µs over bare", "spread (min … max)", "target", "wall µs/req", "log lines"]
    note = results[BARE].note if BARE in results else ""
    return (
        "Whole-process CPU time per request (every thread), median of the repeats; the spread is the fastest "
        "and the slowest repeat, over bare's median. Bare ran first and last"
        + (f" ({note})" if note else "")
        + "; wall µs is the request loop alone. Delivered per request: metric records, spans at the "
        "collector, Sentry envelopes, spans at Sentry's OTLP endpoint.\n\n"
        + md_table([*header, "delivered / req"], rows)
    )


# --------------------------------------------------------------------------- over HTTP


def http_table(summaries: dict[str, Summary], runs: list[Run]) -> str:
    header = ["variant", "req/s", "share of bare", "target", "p50 ms", "p99 ms", "CPU µs/req", "CPU µs over bare"]
    header += ["RSS Δ MiB"]
    header += ["log lines", "stop s", "delivered / req"]
    rows: list[list[str]] = []
    for name, s in summaries.items():
        if not s.ok:
            rows.append([f"`{name}`", "failed", *[""] * 9, failures(name, runs)])
            continue
        target = ""
        if s.variant.target_share is not None and s.share is not None:
            target = f"≥ {s.variant.target_share:.2f}: {verdict(s.share >= s.variant.target_share)}"
        errors = sum(r.errors for r in s.runs)
        rows.append(
            [
                f"`{name}`",
                f"{s.med('rps'):,.0f}",
                "" if s.share is None else f"{s.share:.2f}",
                target,
                f"{s.med('p50_ms'):.2f}",
                f"{s.med('p99_ms'):.2f}",
                f"{s.med('cpu_us_per_req'):.0f}",
                "" if s.cpu_over_bare is None else f"{s.cpu_over_bare:+.0f}",
                f"{s.med('rss_growth_mib'):+.1f}",
                str(max(r.log_lines for r in s.runs)),
                f"{s.med('stop_s'):.1f}" + (" (killed)" if any(r.killed for r in s.runs) else ""),
                _delivered(s.delivered) + (f" · {errors} non-2xx/socket errors" if errors else ""),
            ]
        )
    return md_table(header, rows)


def other_servers_table(by_server: dict[str, dict[str, Summary]]) -> str:
    names = list(by_server)
    header = ["variant"]
    for server in names:
        header += [f"{server} req/s", f"{server} share", f"{server} p50 ms", f"{server} p99 ms"]
    rows = []
    for name in next(iter(by_server.values())):
        row = [f"`{name}`"]
        for server in names:
            s = by_server[server].get(name)
            if s is None or not s.ok:
                row += ["failed", "", "", ""]
                continue
            share = "" if s.share is None else f"{s.share:.2f}"
            row += [f"{s.med('rps'):,.0f}", share, f"{s.med('p50_ms'):.2f}", f"{s.med('p99_ms'):.2f}"]
        rows.append(row)
    return md_table(header, rows)


def dead_ratios(dead: Summary, live: Summary) -> tuple[float, float]:
    """p50 and p99 of the dead variant over the live one, each first taken over its own bare run (the machine
    is shared: bare's own latency moves more between runs than the difference looked for)."""
    nan = float("nan")
    p50, p99 = (dead.vs_bare.get(attr, nan) / live.vs_bare.get(attr, nan) for attr in ("p50_ms", "p99_ms"))
    return p50, p99


def dead_section(summaries: dict[str, Summary]) -> str:
    rows, samples = [], []
    for s in summaries.values():
        live = summaries.get(s.variant.live or "")
        if live is None:
            continue
        if not s.ok or not live.ok:
            rows.append([f"`{s.variant.name}`", f"`{live.variant.name}`", "failed", "", "", "", ""])
            continue
        p50, p99 = dead_ratios(s, live)
        ok = p50 <= DEAD_MAX and p99 <= DEAD_MAX
        lines = max(r.log_lines for r in s.runs)
        rows.append(
            [
                f"`{s.variant.name}`",
                f"`{live.variant.name}`",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"≤ {DEAD_MAX:.2f} both: {verdict(ok)}",
                f"{lines} (live {max(r.log_lines for r in live.runs)}), ≤ {DEAD_MAX_LINES}: "
                f"{verdict(lines <= DEAD_MAX_LINES)}",
                f"{s.med('stop_s'):.1f}",
            ]
        )
        head = "\n".join(f"    {line}" for line in s.runs[-1].log_head) or "    (none)"
        samples.append(f"`{s.variant.name}`: the first of its {s.runs[-1].log_lines} log lines\n\n{head}")
    if not rows:
        return "No dead-peer variant was run."
    header = ["dead", "live", "p50 dead/live", "p99 dead/live", "target", "log lines", "stop s"]
    return (
        "p50 and p99 of each run over those of the bare run right before it, median over rounds, then dead over "
        "live. Log lines: everything the server printed besides metric records, whole run.\n\n"
        + md_table(header, rows, left=2)
        + ("\n\n" + "\n\n".join(samples) if samples else "")
    )


# --------------------------------------------------------------------------- cold start


def _cold_checks(r: ColdResult) -> list[tuple[str, float | None, float, str]]:
    """(what, figure over bare, limit, unit) for each cold-start target of ``r``'s variant."""
    if r.variant.target_cold is None:
        return []
    ms, mib = r.variant.target_cold
    return [
        ("process CPU", r.delta("cpu_ms"), ms, "ms"),
        ("wall", r.delta("wall_ms"), ms, "ms"),
        ("peak RSS", r.delta("rss_mib"), mib, "MiB"),
    ]


def _cold_verdicts(r: ColdResult) -> str:
    """``≤ +60 ms, +8 MiB: process CPU PASS, wall PASS, peak RSS PASS`` for a variant with a cold-start target."""
    checks = _cold_checks(r)
    if not checks or r.variant.target_cold is None:
        return ""
    ms, mib = r.variant.target_cold
    parts = [
        f"{what} {'not measured' if value is None else verdict(value <= limit)}" for what, value, limit, _ in checks
    ]
    return f"≤ +{ms:g} ms, +{mib:g} MiB: " + ", ".join(parts)


def _over_bare(r: ColdResult, attr: str, digits: int = 0) -> str:
    if r.variant.name == BARE:
        return f"{0:+.{digits}f}"
    value = r.delta(attr)
    return "" if value is None else f"{value:+.{digits}f}"


def coldstart_table(results: dict[str, ColdResult], rounds: int) -> str:
    header = ["variant", *(f"{p} ms" for p in PHASES), "process CPU ms", "over bare", "wall ms", "over bare"]
    header += ["peak RSS MiB", "over bare", "target"]
    rows: list[list[str]] = []
    for name, r in results.items():
        if not r.ok:
            rows.append([f"`{name}`", "failed", *[""] * (len(header) - 3), r.failure()])
            continue

        rows.append(
            [
                f"`{name}`",
                *(f"{r.phase(p):.0f}" for p in PHASES),
                f"{r.median('cpu_ms'):.0f}",
                _over_bare(r, "cpu_ms"),
                f"{r.median('wall_ms'):.0f}",
                _over_bare(r, "wall_ms"),
                f"{r.median('rss_mib'):.1f}",
                _over_bare(r, "rss_mib", 1),
                _cold_verdicts(r),
            ]
        )
    return (
        f"A fresh process per run: import Litestar and what the app needs, build the app, lifespan start-up, one "
        f"`GET {PATH}` through ASGI, lifespan shutdown, exit. Phases are the worker's CPU time "
        "(`time.process_time()`, every thread), median over runs. Process CPU (user + system, interpreter "
        "start and exit included) and wall time from spawn to exit are read by the parent with `os.wait4`; "
        "peak RSS is the worker's `VmHWM` after shutdown. "
        f"Each variant ran right after its own bare run, {rounds} round(s); over bare "
        "is the median of each run minus that bare run. Targets are judged on process CPU, wall and peak RSS "
        "over bare.\n\n" + md_table(header, rows)
    )


# --------------------------------------------------------------------------- fixed-rate tail latency


def _tail_verdicts(s: TailSummary) -> str:
    """``p99 ≤ 1.1x bare: PASS, p50 ≤ 1.05x: PASS`` for a variant with a tail target."""
    target = s.variant.target_p99
    if target is None:
        return ""
    p50, p99 = s.vs_bare.get("p50"), s.vs_bare.get("p99")
    if p50 is None or p99 is None:
        return f"p99 ≤ {target:g}x bare: not measured"
    return f"p99 ≤ {target:g}x bare: {verdict(p99 <= target)}, p50 ≤ {P50_MAX:g}x: {verdict(p50 <= P50_MAX)}"


def tail_table(summaries: dict[str, TailSummary], rate: float, duration: float, rounds: int) -> str:
    header = ["variant", "req/s sent", *(f"{p} ms" for p in PERCENTILES), *(f"{p} / bare" for p in PERCENTILES)]
    header += ["server CPU µs/req", "wrk CPU", "errors", "target"]
    rows: list[list[str]] = []
    for name, s in summaries.items():
        if not s.runs:
            rows.append([f"`{name}`", "failed", *[""] * (len(header) - 2)])
            continue
        sent = s.med_attr("rate")
        note = "" if sent >= UNDERLOADED * rate else " (did not keep up)"
        rows.append(
            [
                f"`{name}`",
                f"{sent:,.0f}{note}",
                *(f"{s.med(p):.2f}" for p in PERCENTILES),
                *("" if p not in s.vs_bare else f"{s.vs_bare[p]:.2f}" for p in PERCENTILES),
                f"{s.med_attr('server_cpu_us'):.0f}",
                f"{s.med_attr('wrk_cpu_share'):.0%}",
                str(sum(r.errors for r in s.runs)),
                _tail_verdicts(s),
            ]
        )
    return (
        f"uvicorn (uvloop + httptools), 1 worker, `GET {PATH}` at {rate:,.0f} requests/s for {duration:g} s per run "
        f"({rounds} round(s)), 1 s warm-up. Load generator: {LOAD_GENERATOR}; latency counts from when a request "
        "was sent. Bare ran first, between every two variants and last: each variant's percentiles are over "
        "the lower of the bare runs right before and after it (median over rounds; a burst of other work on "
        "the shared machine only raises percentiles). wrk CPU is the load "
        "generator's own CPU time over the run's wall time (share of one core; the server had the rest of "
        "the machine). Server CPU is the server's, every thread, per request.\n\n" + md_table(header, rows)
    )


# --------------------------------------------------------------------------- targets and comparison


def targets_section(
    results: dict[str, Result],
    http: dict[str, Summary] | None,
    cold: dict[str, ColdResult] | None = None,
    tail: dict[str, TailSummary] | None = None,
) -> str:
    lines = []
    for v in VARIANTS:
        if v.target_us is not None and v.name in results:
            added = over_bare(results, v.name)
            figure = "not measured" if added is None else f"{added:+.2f} µs"
            ok = added is not None and added <= v.target_us
            lines.append(f"- {verdict(ok)} in-process `{v.name}` ≤ +{v.target_us:g} µs over bare: {figure}")
    for v in VARIANTS:
        s = (http or {}).get(v.name)
        if v.target_share is not None and s is not None:
            figure = "not measured" if s.share is None else f"{s.share:.3f}"
            ok = s.share is not None and s.share >= v.target_share
            lines.append(f"- {verdict(ok)} uvicorn `{v.name}` ≥ {v.target_share:.2f} of bare: {figure}")
    for v in VARIANTS:
        s, live = (http or {}).get(v.name), (http or {}).get(v.live or "")
        if s is not None and live is not None and s.ok and live.ok:
            p50, p99 = dead_ratios(s, live)
            ok = p50 <= DEAD_MAX and p99 <= DEAD_MAX
            lines.append(f"- {verdict(ok)} uvicorn `{v.name}` p50/p99 within 10% of `{v.live}`: {p50:.2f} / {p99:.2f}")
            count = max(r.log_lines for r in s.runs)
            lines.append(
                f"- {verdict(count <= DEAD_MAX_LINES)} uvicorn `{v.name}` at most {DEAD_MAX_LINES} log lines: {count}"
            )
    for name, r in (cold or {}).items():
        for what, value, limit, unit in _cold_checks(r):
            figure = "not measured" if value is None else f"{value:+.1f} {unit}"
            ok = value is not None and value <= limit
            lines.append(f"- {verdict(ok)} cold start `{name}` {what} ≤ +{limit:g} {unit} over bare: {figure}")
    for name, t in (tail or {}).items():
        target = t.variant.target_p99
        if target is None:
            continue
        for p, limit in (("p99", target), ("p50", P50_MAX)):
            value = t.vs_bare.get(p)
            figure = "not measured" if value is None else f"{value:.2f}"
            ok = value is not None and value <= limit
            lines.append(f"- {verdict(ok)} uvicorn fixed-rate `{name}` {p} ≤ {limit:g}x bare's: {figure}")
    return "\n".join(lines) or "No target was measured."


def comparison_table(results: dict[str, Result], http: dict[str, Summary] | None) -> str:
    rows = []
    for v in VARIANTS:
        if v.name == BARE or v.live or v.name not in results:
            continue
        r = results[v.name]
        cells = []
        for feature in FEATURES:
            cell = "✓" if feature in v.features else "—"
            if feature == "traces" and feature in v.features and (spans := r.needs_request_setup("spans")) is not None:
                cell += f" ({spans:.2f} spans/req)"
            if feature == "Sentry perf" and feature in v.features:
                spans, envelopes = r.needs_request_setup("sentry spans"), r.needs_request_setup("sentry")
                if spans:
                    cell += f" ({spans:.2f} spans/req)"
                elif envelopes is not None:
                    cell += f" ({envelopes:.2f} transactions/req)"
            cells.append(cell)
        added = over_bare(results, v.name)
        s = (http or {}).get(v.name)
        share = "" if s is None or s.share is None else f"{s.share:.2f}"
        rows.append([f"`{v.name}`", *cells, "" if added is None else f"{added:+.1f}", share])
    header = ["variant", *FEATURES, "µs over bare (in-process)", "share of bare (uvicorn)"]
    return (
        "Features as configured here (✓), with what the in-process run delivered per request; cost from the "
        "tables above. Sentry errors: no request fails here, so this is the cost of being ready to report. "
        "Fewer Sentry transactions than requests means sentry-sdk's transport queue (100 envelopes) was full "
        "and dropped the rest.\n\n" + md_table(header, rows, left=1 + len(FEATURES))
    )
