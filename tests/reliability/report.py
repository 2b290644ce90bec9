"""Print the figures the reliability suite measured, as the README's markdown table.

Run ``make reliability`` (the suite, then this) to regenerate them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    print("| scenario | requests | concurrency | lost | duplicated | notes |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for server in ("uvicorn", "granian"):
        load_run = load(f"load-{server}")
        if load_run:
            print(
                f"| load, {server} ({load_run['workers']} worker(s)) | {load_run['requests_sent']:,} | "
                f"{load_run['concurrency']} | {load_run['lost']} | {load_run['duplicated']} | "
                f"{load_run['lines']:,} lines, {load_run['spans']:,} spans, {load_run['events']} Sentry events for "
                f"{load_run['server_errors']} 5xx; {load_run['excluded']} excluded requests left no trace |"
            )
        stop = load(f"sigterm-{server}")
        if stop:
            print(
                f"| SIGTERM mid-traffic, {server} | {stop['requests_sent']:,} | 50 | {stop['lost']} | "
                f"{stop['duplicated']} | {stop['answered']:,} answered before the stop, each with its line, span "
                f"and (5xx) event |"
            )
    print()
    print(
        "| fault | requests | answered normally | server p99 ms | server p99 / no fault "
        "| client p99 ms | client p99 / no fault | server log lines |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in sorted(RESULTS.glob("fault-*.json")):
        fault = json.loads(path.read_text())
        name = path.stem.removeprefix("fault-")
        baseline = name == "none"
        print(
            f"| {name} | {fault['requests']} | {fault['answered_normally']} | {fault.get('server_p99_ms', 'n/a')} | "
            f"{'1.0' if baseline else fault.get('server_p99_ratio', 'n/a')} | {fault['client_p99_ms']} | "
            f"{'1.0' if baseline else fault.get('client_p99_ratio', 'n/a')} | {fault['log_lines']} |"
        )
    memory = load("memory-dead-collector")
    if memory:
        print()
        print(
            f"Memory with a dead collector: RSS {memory['rss_early_kib'] / 1024:.1f} MiB early, "
            f"{memory['rss_late_kib'] / 1024:.1f} MiB after {memory['soak_seconds']:.0f} s and "
            f"{memory['requests']:,} requests: ratio {memory['rss_ratio']} (bound 1.2)."
        )
    hostile = load("hostile")
    if hostile:
        print()
        print(
            "Hostile input: "
            + ", ".join(f"{k} {v}" for k, v in sorted(hostile.items()) if not isinstance(v, dict | list))
        )


if __name__ == "__main__":
    main()
