"""Instructions per request under callgrind: the per-request figure a busy shared host cannot move.

Whole-process CPU per request (``bench.inprocess``) moves by up to 2x between runs on a shared virtual
machine; instruction counts do not (the same code counted twice agrees within about 1%). Each variant's
in-process worker runs under ``valgrind --tool=callgrind`` twice, with ``N1`` and ``N2`` requests after
the same warm-up; ``(I(N2) - I(N1)) / (N2 - N1)`` is the instructions of one request, every thread
included (the line writer, the span batcher). Needs valgrind (Debian's ``valgrind``); about 40 s a
variant on two cores. Standalone only::

    .venv/bin/python -m bench.instructions [variant,variant,...]   # default: bare and the four targets

To compare two commits, run it from a worktree of each (the worker imports the package from its folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import variants
from bench.peers import Peers

ROOT = Path(__file__).resolve().parent.parent
N1, N2 = 300, 1300
DEFAULT = ("bare", "obs-latency", "obs-default", "obs-prod", "obs-all100")


def count(name: str, requests: int, peers: Peers) -> int:
    """Instructions of one in-process worker run of ``name`` with ``requests`` requests (after its warm-up)."""
    workdir = tempfile.mkdtemp(prefix="bench-instr-")
    env = variants.clean_environ(variants.get(name), peers.endpoints())
    env.update(BENCH_INPROC_REQUESTS=str(requests), BENCH_INPROC_REPEATS="1", BENCH_RESULT_FILE=f"{workdir}/r.json")
    out = f"{workdir}/callgrind.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    subprocess.run(
        [*command, "-m", "bench.inprocess", "--worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=1800,
        check=True,
    )
    found = re.search(r"^(?:summary|totals):\s+(\d+)", Path(out).read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(found.group(1))


def main(argv: list[str]) -> int:
    names = argv[0].split(",") if argv else list(DEFAULT)
    if "bare" not in names:
        names.insert(0, "bare")
    jobs = [(name, n) for name in names for n in (N1, N2)]
    with Peers() as peers, ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: count(*job, peers), jobs), strict=True))
    per_request = {name: (totals[name, N2] - totals[name, N1]) / (N2 - N1) for name in names}
    print("| variant | instructions per request | over bare |")
    print("| --- | ---: | ---: |")
    for name in names:
        over = per_request[name] - per_request["bare"]
        print(f"| `{name}` | {per_request[name] / 1000:,.1f}k | {'' if name == 'bare' else f'+{over / 1000:,.1f}k'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
