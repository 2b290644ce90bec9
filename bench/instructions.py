"""Instructions per request under callgrind: the per-request figure a busy shared host cannot move.

Whole-process CPU per request (``bench.inprocess``) moves by up to 2x between runs on a shared virtual
machine; instruction counts do not. Each variant runs under ``valgrind --tool=callgrind
--separate-threads=yes`` twice, with ``N1`` and ``N2`` requests after the same warm-up;
``(I(N2) - I(N1)) / (N2 - N1)`` is the instructions of one request, reported for the thread that
serves requests (the event loop's) and for the other threads (the line writer, the span batcher, the
exporters) apart: the request thread's figure is the stable one (the same code counted twice agrees
within about 1%); the other threads' includes work done on a clock (a line-writer wake every 50 ms,
a metric export every 60 s) that callgrind's slowness spreads over fewer requests than a real run
does, so it is an upper bound that moves by several thousand between runs.

Two ways to run a variant:

- in-process (the default): ``bench.inprocess``'s worker drives the ASGI app directly;
- ``--uvicorn``: the app under uvicorn (uvloop + httptools, 1 worker), sent ``GET /users/42`` one after
  another on one keep-alive connection from this process (outside valgrind): what the plugin adds to
  a real server's request thread. The last column is bare's request-thread count over the variant's.
  It is not the HTTP table's share: callgrind counts no kernel time (socket I/O, about a quarter of
  bare's CPU under uvicorn), and on a server each of the plugin's instructions costs more than bare's
  (measured at 4,000 requests/s: 0.4-0.7 µs of user time per 1,000 added instructions, bare 0.27).

Needs valgrind (Debian's ``valgrind``); about 40 s a variant in-process, 90 s under uvicorn, on two
cores. Standalone only::

    .venv/bin/python -m bench.instructions [--uvicorn] [variant,variant,...]  # default: bare, bare-hooks, 4 targets

``bare-hooks`` is the floor: Litestar with the plugin's three hook points, each empty (``bench.apps.hooks_app``).
What a variant adds over it is the plugin's own work; what it adds over bare includes Litestar's.

To compare two commits, run it from a worktree of each (the worker imports the package from its folder).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import variants
from bench.peers import Peers, free_port
from bench.servers import PATH, SERVERS

ROOT = Path(__file__).resolve().parent.parent
N1, N2 = 300, 1300
WARM_UP = 300
DEFAULT = ("bare", "bare-hooks", "obs-latency", "obs-default", "obs-prod", "obs-all100")
_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)

#: (request thread, other threads): instructions of one run.
Counts = tuple[int, int]


def _read_counts(out: str) -> Counts:
    """The request thread's (callgrind's thread 1, the main thread) and the other threads' instructions."""
    main = others = 0
    for path in Path(out).parent.glob(Path(out).name + "*"):
        thread = re.search(r"-(\d+)$", path.name)
        found = _TOTAL.search(path.read_text())
        if thread is None or found is None:
            continue
        if int(thread.group(1)) == 1:
            main += int(found.group(1))
        else:
            others += int(found.group(1))
    if not main:
        raise RuntimeError(f"no instruction total for the main thread in {out}*")
    return main, others


def _callgrind(out: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}", sys.executable]


def count(name: str, requests: int, peers: Peers) -> Counts:
    """Instructions of one in-process worker run of ``name`` with ``requests`` requests (after its warm-up)."""
    workdir = tempfile.mkdtemp(prefix="bench-instr-")
    env = variants.clean_environ(variants.get(name), peers.endpoints())
    env.update(BENCH_INPROC_REQUESTS=str(requests), BENCH_INPROC_REPEATS="1", BENCH_RESULT_FILE=f"{workdir}/r.json")
    out = f"{workdir}/callgrind.out"
    subprocess.run(
        [*_callgrind(out), "-m", "bench.inprocess", "--worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=1800,
        check=True,
    )
    return _read_counts(out)


def count_uvicorn(name: str, requests: int, peers: Peers) -> Counts:
    """Instructions of one uvicorn run of ``name``: ``WARM_UP`` + ``requests`` sequential requests, then SIGINT."""
    workdir = tempfile.mkdtemp(prefix="bench-instr-")
    env = variants.clean_environ(variants.get(name), peers.endpoints())
    out = f"{workdir}/callgrind.out"
    port = free_port()
    command = SERVERS["uvicorn"].command(port)[1:]  # [-m, uvicorn, ...] after the interpreter
    with open(f"{workdir}/stderr", "wb") as stderr:
        proc = subprocess.Popen(
            [*_callgrind(out), *command], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        connection = _connect(proc, port)
        for _ in range(WARM_UP + requests):
            connection.request("GET", PATH)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{name}: GET {PATH} answered {response.status}")
        connection.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _read_counts(out)


def _connect(proc: subprocess.Popen[bytes], port: int, timeout: float = 600.0) -> http.client.HTTPConnection:
    """A connection to the server once it listens (several minutes under valgrind on a busy host)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before serving")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.connect()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        return connection


def main(argv: list[str]) -> int:
    uvicorn = "--uvicorn" in argv
    argv = [arg for arg in argv if arg != "--uvicorn"]
    names = argv[0].split(",") if argv else list(DEFAULT)
    if "bare" not in names:
        names.insert(0, "bare")
    counter = count_uvicorn if uvicorn else count
    jobs = [(name, n) for name in names for n in (N1, N2)]
    with Peers() as peers, ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: counter(job[0], job[1], peers), jobs), strict=True))
    per_request = {
        name: tuple((late - early) / (N2 - N1) for early, late in zip(totals[name, N1], totals[name, N2], strict=True))
        for name in names
    }
    bare_main, bare_others = per_request["bare"]
    where = "uvicorn (uvloop + httptools), sequential keep-alive requests" if uvicorn else "in-process"
    print(f"Instructions per request, {where}; request thread and other threads apart")
    print()
    ratio = (" bare ÷ variant |", " ---: |") if uvicorn else ("", "")
    print("| variant | request thread | over bare | other threads | over bare |" + ratio[0])
    print("| --- | ---: | ---: | ---: | ---: |" + ratio[1])
    for name in names:
        main_, others = per_request[name]
        row = f"| `{name}` | {main_ / 1000:,.1f}k | {_over(main_ - bare_main, name)} | {others / 1000:,.1f}k | "
        row += f"{_over(others - bare_others, name)} |"
        if uvicorn:
            row += f" {bare_main / main_:.2f} |"
        print(row)
    return 0


def _over(delta: float, name: str) -> str:
    return "" if name == "bare" else f"{delta / 1000:+,.1f}k"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
