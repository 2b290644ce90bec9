"""Several server workers, one stdout pipe, a lagging reader: every metric line arrives whole, none is lost.

example_app runs under uvicorn with 4 workers and under gunicorn with 4 uvicorn workers, the metric sink on
stdout: every worker writes its lines to the one pipe they all inherit. The test reads that pipe like a log
shipper under back-pressure, drives a bounded mix of requests over real HTTP (200, 400, 404, 405, 500 and the
excluded /health), SIGTERMs the server and reads the pipe to its end. Every line must be valid JSON, and each
answered request must have exactly its ``api_latency`` line: its trace id is the response's ``X-Request-ID``
and its status the response's.

A write to a pipe is atomic only up to PIPE_BUF bytes: a longer one that finds the pipe full is written in
pieces as the reader makes room, and another worker's write can land between them, splicing two lines. What
makes that happen within a short test on 2 cores:

- the reader reads 4096 bytes at a time, 2 ms apart, and stalls 0.6 s every 48 reads (a shipper sending its
  batch), so every worker finds the pipe full and waits in the middle of a write;
- the pipe holds 2 pages (``F_SETPIPE_SZ``; what Linux gives the pipes of a user past ``pipe-user-pages-soft``),
  so it fills within a stall;
- the writers write every 0.5 s (``OMNII_OBS_METRICS_FLUSH_INTERVAL``) instead of 0.05 s: this load gives a few
  hundred requests a second, so a batch is then as large as a busy worker's at the default interval.

Before the writer wrote at most PIPE_BUF bytes of whole lines at a time, this test found dozens of spliced lines
under both servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.servers import drive, start_server

REQUESTS = 3000
CONCURRENCY = 20  # the load generator's best rate on 2 cores
WORKERS = 4
READ_SIZE = 4096
READ_PAUSE = 0.002  # seconds between reads
STALL_EVERY = 48  # reads
STALL = 0.6  # seconds; on average the reader still keeps up, so nothing is lost at shutdown
PIPE_SIZE = 2 * 4096


class LaggingReader(threading.Thread):
    """Reads ``fd`` to its end, ``READ_SIZE`` bytes at a time, pausing after each read and stalling now and then."""

    def __init__(self, fd: int) -> None:
        super().__init__(name="lagging-reader", daemon=True)
        self.fd = fd
        self.chunks: list[bytes] = []

    def run(self) -> None:
        while chunk := os.read(self.fd, READ_SIZE):
            self.chunks.append(chunk)
            time.sleep(STALL if len(self.chunks) % STALL_EVERY == 0 else READ_PAUSE)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if path.exists():
        for child in (int(p) for p in path.read_text().split()):
            found += [child, *descendants(child)]
    return found


def all_workers(pid: int, count: int, timeout: float = 15.0) -> list[int]:
    """The server's worker processes once ``count`` are up (the server answers as soon as its first is)."""
    deadline = time.monotonic() + timeout
    found = descendants(pid)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = descendants(pid)
    return found


@pytest.mark.reliability
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_workers_sharing_a_stdout_pipe_write_whole_lines_and_lose_none(server: str, tmp_path: Path) -> None:
    env = {"OMNII_OBS_METRICS_SINK": "stdout", "OMNII_OBS_METRICS_FLUSH_INTERVAL": "0.5"}
    process = start_server(env, tmp_path, server=server, workers=WORKERS, stdout=subprocess.PIPE)
    assert process.proc.stdout is not None
    pipe = process.proc.stdout.fileno()
    assert fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, PIPE_SIZE) == PIPE_SIZE
    reader = LaggingReader(pipe)
    reader.start()
    workers = all_workers(process.proc.pid, WORKERS)
    try:
        result = asyncio.run(drive(process.url, REQUESTS, CONCURRENCY))
        returncode = process.stop(timeout=60)
        reader.join(30)
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)
        for pid in workers:  # a worker left behind would hold the pipe open
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not reader.is_alive(), "stdout did not reach its end 30 s after the server exited"
    process.proc.stdout.close()
    stderr = process.stderr()
    assert returncode in (0, -signal.SIGTERM), stderr[-3000:]
    assert len(workers) >= WORKERS, workers

    data = b"".join(reader.chunks)
    assert data.endswith(b"\n"), data[-300:]
    lines: list[dict[str, Any]] = []
    broken: list[bytes] = []
    for raw in data.split(b"\n")[:-1]:
        try:
            lines.append(json.loads(raw))
        except ValueError:
            broken.append(raw)
    assert broken == [], f"{len(broken)} line(s) are not JSON, e.g. {broken[0][:400]!r}"

    answered = result.answered
    assert len(answered) == REQUESTS, [o.error for o in result.outcomes if o.error][:5]
    assert all(o.status == o.expected for o in answered), Counter((o.method, o.route, o.status) for o in answered)
    observed = [o for o in answered if o.route is not None]  # /health is excluded: no line, no X-Request-ID
    assert all(o.request_id for o in observed)
    latency = [line for line in lines if line["metric"] == "api_latency"]
    by_id = Counter(line["trace_id"] for line in latency)
    status_by_id = {line["trace_id"]: line["status"] for line in latency}
    missing = [o for o in observed if by_id[o.request_id] != 1]
    assert missing == [], f"{len(missing)} request(s) without exactly one line, e.g. {missing[0]}"
    assert [o for o in observed if status_by_id[o.request_id] != o.status] == []
    assert len(latency) == len(observed)
    assert {line["service"] for line in lines} == {"omnii-mcp"}
