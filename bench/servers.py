"""The measured servers and the load generator: start, wait, load with wrk, read CPU, stop.

Every server runs ``bench.apps:app`` with one worker on 127.0.0.1 and logs at warning level with no access
log. The primary server is uvicorn with uvloop and httptools (what ``uvicorn[standard]`` runs); the second
is granian's ASGI interface; uvicorn on asyncio + h11 (plain ``pip install uvicorn``) is an extra.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PATH", "SERVERS", "Server", "cpu_seconds", "rss_kib", "stop", "wait_ready", "wrk"]

PATH = "/users/42"
WRK_THREADS, WRK_CONNECTIONS = 2, 32
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

_COMMON = ["--host", "127.0.0.1", "--workers", "1", "--log-level", "warning", "--no-access-log"]


@dataclass(frozen=True)
class Server:
    name: str
    label: str
    args: tuple[str, ...]

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", *self.args, *_COMMON, "--port", str(port), "bench.apps:app"]


SERVERS = {
    s.name: s
    for s in (
        Server("uvicorn", "uvicorn, uvloop + httptools", ("uvicorn", "--loop", "uvloop", "--http", "httptools")),
        Server(
            "granian", "granian, ASGI, uvloop", ("granian", "--interface", "asgi", "--loop", "uvloop", "--http", "1")
        ),
        Server("uvicorn-h11", "uvicorn, asyncio + h11", ("uvicorn", "--loop", "asyncio", "--http", "h11")),
    )
}


# --------------------------------------------------------------------------- wrk

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


# --------------------------------------------------------------------------- the server process


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (granian serves from a worker process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server: every thread of the process and of its descendants, in seconds."""
    total = 0
    for each in _tree(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def rss_kib(pid: int) -> int:
    total = 0
    for each in _tree(pid):
        try:
            lines = Path(f"/proc/{each}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total


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


def stop(proc: subprocess.Popen[bytes]) -> tuple[float, bool]:
    """SIGINT (graceful shutdown, which runs the lifespan exit); SIGKILL to the group after STOP_TIMEOUT."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.monotonic() - started, True
    return time.monotonic() - started, False
