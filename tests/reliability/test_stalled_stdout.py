"""A stdout nobody reads: requests are still answered, and SIGTERM still ends the server, saying what was lost.

example_app runs under a real server with the metric sink on stdout (the default) and stdout a pipe that this test
never reads while the server runs. A bounded load fills the pipe, so the metric writer blocks on it; every request
must be answered all the same. Then SIGTERM: the process must exit on its own, within a generous bound, after the
plugin's bounded metric shutdown (``OMNII_OBS_METRICS_SHUTDOWN_TIMEOUT=2``) gave up on the pipe and logged how many
metric lines were lost. Once the process is gone the pipe is read: every line is either in it or counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import termios
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.servers import start_server

REQUESTS = 3000  # in two halves; ~300 lines fill a pipe
CONCURRENCY = 20
EXIT_BOUND = 30.0  # seconds; "exits on its own at all", not a timing target
LOST = re.compile(r"metric sink 'stdout' blocked for [0-9.]+s at shutdown; (\d+) metric line\(s\) lost")
# (method, path, status): each request gets exactly one api_latency line and no other metric line.
KINDS = [("GET", "/users/{i}", 200), ("GET", "/nothing/{i}", 404), ("DELETE", "/users/{i}", 405)]


def unread_bytes(fd: int) -> int:
    """Bytes written to the pipe and not read yet."""
    buffer = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return int.from_bytes(buffer, "little")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def settled(fd: int) -> int:
    """The pipe's unread bytes once they stop growing (the writer is blocked on it); bounded polling."""
    last = -1
    for _ in range(100):
        now = unread_bytes(fd)
        if now == last and now > 0:
            return now
        last = now
        time.sleep(0.2)
    return last


async def send(url: str, first: int, n: int) -> list[tuple[int, int | None]]:
    """Requests ``first`` to ``first + n`` of the kinds, ``CONCURRENCY`` at a time: (expected, got) statuses."""
    results: list[tuple[int, int | None]] = []
    numbers = iter(range(first, first + n))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for i in numbers:
                method, path, expected = KINDS[i % len(KINDS)]
                try:
                    response = await client.request(method, path.format(i=i))
                    results.append((expected, response.status_code))
                except httpx.TransportError:
                    results.append((expected, None))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


@pytest.mark.parametrize(
    ("server", "unbuffered"),
    [
        pytest.param("uvicorn", "1", id="uvicorn"),
        pytest.param("uvicorn", "", id="uvicorn-buffered-stdout"),  # PYTHONUNBUFFERED unset, as in many images
        pytest.param("granian", "1", id="granian"),
    ],
)
def test_sigterm_with_a_stdout_nobody_reads_exits_and_counts_lost_lines(
    server: str, unbuffered: str, tmp_path: Path
) -> None:
    env = {
        "OMNII_OBS_METRICS_SINK": "stdout",
        "OMNII_OBS_METRICS_SHUTDOWN_TIMEOUT": "2",
        "PYTHONUNBUFFERED": unbuffered,
        # Granian's own log lines go to stdout: on a stalled pipe they would hang granian's shutdown whatever
        # the plugin does, so they are off here (the plugin's lines still go to stderr).
        "GRANIAN_LOG_ENABLED": "false",
    }
    process = start_server(env, tmp_path, server=server, stdout=subprocess.PIPE)
    assert process.proc.stdout is not None
    pipe = process.proc.stdout.fileno()
    workers = children(process.proc.pid)
    try:
        first = asyncio.run(send(process.url, 0, REQUESTS // 2))
        stuck_at = settled(pipe)  # the pipe is full: the writer is blocked on it
        second = asyncio.run(send(process.url, REQUESTS // 2, REQUESTS - REQUESTS // 2))
        after_second = settled(pipe)
        alive_after_load = process.proc.poll() is None
        process.proc.send_signal(signal.SIGTERM)
        try:
            returncode: int | None = process.proc.wait(EXIT_BOUND)
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)
        for pid in workers:  # a worker left behind (granian's) would hold the pipe open
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    os.set_blocking(pipe, False)
    written = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(pipe, 1 << 16):  # everything that reached the pipe
            written += chunk
    process.proc.stdout.close()
    stderr = process.stderr()

    # Every request was answered, with its normal status, while the writer was blocked: not one more byte
    # reached the pipe during the second half of the load.
    answers = first + second
    assert len(answers) == REQUESTS
    assert [(expected, got) for expected, got in answers if got != expected] == []
    assert stuck_at == after_second > 0
    assert alive_after_load

    # SIGTERM ended it, on its own, after saying how many lines it could not write.
    assert returncode is not None, f"still running {EXIT_BOUND}s after SIGTERM:\n{stderr[-3000:]}"
    assert returncode in (0, -signal.SIGTERM), stderr[-3000:]
    reported = [int(n) for n in LOST.findall(stderr)]
    assert len(reported) == 1, stderr[-3000:]
    lost = reported[0]

    # Every line is either in the pipe or counted as lost (the lines of the write that blocked midway may be both).
    assert len(written) == after_second
    delivered = [json.loads(line) for line in written.split(b"\n")[:-1]]  # the last piece may be cut
    assert {line["metric"] for line in delivered} == {"api_latency"}
    assert 0 < lost <= REQUESTS
    assert len(delivered) + lost >= REQUESTS
