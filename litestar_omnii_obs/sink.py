"""The metric-line writer: an in-memory queue and a daemon thread that writes JSON lines.

``submit`` only appends to a deque, so the event loop never waits on a disk or a pipe.
Each app's plugin owns one writer (its sink and its ``service``/``environment``
labels). The writer does not use stdlib logging: ``Litestar(...)`` reconfigures logging
when the app is built and would close a handler created before it.

Standard streams are written with ``os.write`` on their file descriptor, holding no
Python lock: a pipe nobody reads can stall the writer thread, never the interpreter's
own shutdown, and the plugin's shutdown gives up on it after a bound.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import IO

import msgspec
from opentelemetry.trace import INVALID_SPAN_ID

from litestar_omnii_obs.config import ObservabilityConfig
from litestar_omnii_obs.records import ApiLatencyMetric, Metric, milliseconds

__all__ = ["MetricWriter"]

_logger = logging.getLogger("litestar_omnii_obs")

#: A typed record: (wall time, record, trace id, span id).
_Record = tuple[float, Metric, int, int]
#: A latency record queued without building the typed record:
#: (wall time, route, method, status, seconds, error, trace id as 32 hex digits, span id).
_Latency = tuple[float, str, str, int, float, str | None, bytes, int]
_IDS = b',"trace_id":"%032x","span_id":"%016x"'
_HEX_IDS = b',"trace_id":"%s","span_id":"%016x"'


class MetricWriter:
    """One sink with its labels; lines are queued by ``submit`` and written by a daemon thread."""

    def __init__(self, config: ObservabilityConfig) -> None:
        self.sink = config.metrics.sink
        self._max_queue = config.metrics.max_queue
        self._interval = config.metrics.flush_interval
        self._labels = (
            b',"service":'
            + msgspec.json.encode(config.service_name)
            + b',"environment":'
            + msgspec.json.encode(config.environment)
        )
        self._queue: deque[_Record | _Latency] = deque()
        self._encoder = msgspec.json.Encoder()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[bytes] | None = None
        self._failed = False
        self._closed = False
        self.dropped = 0
        self._inflight = 0
        self._stamp_second = -1
        self._stamp = b""
        self._latency_templates: dict[tuple[str, str, bool], bytes] = {}
        self.off = self.sink == "off"
        if self.sink not in ("stdout", "stderr", "off"):
            try:
                self._file = open(self.sink, "ab")  # noqa: SIM115 - kept open until close()
            except OSError as exc:
                self._report_failure(exc)

    def submit(self, metric: Metric, trace_id: int, span_id: int) -> None:
        """Queue one record with its trace ids; never blocks or raises."""
        if self._accepts():
            self._queue.append((time.time(), metric, trace_id, span_id))

    def submit_latency(
        self, route: str, method: str, status: int, seconds: float, error: str | None, trace_hex: bytes, span_id: int
    ) -> None:
        """Queue an ``api_latency`` line from its fields (the request path, when no one needs the typed record).

        The line is the one :class:`ApiLatencyMetric` encodes to; rounding and encoding happen in the
        writer thread. ``trace_hex`` is the trace id already formatted (for ``X-Request-ID``), ``b""`` without one.
        """
        queue = self._queue
        # The usual case is settled by the first test; _accepts starts the thread and counts drops.
        if (len(queue) < self._max_queue and self._thread is not None and not self._closed) or self._accepts():
            queue.append((time.time(), route, method, status, seconds, error, trace_hex, span_id))

    def _accepts(self) -> bool:
        if self.off:
            return False
        if len(self._queue) >= self._max_queue or self._closed:
            self.dropped += 1
            if self.dropped == 1:
                _logger.warning("metrics queue full (%d lines); dropping lines until it drains", self._max_queue)
            return False
        if self._thread is None:
            self._start()
        return True

    def pending(self) -> int:
        """Lines queued or being written right now (lost if the process ends before they are)."""
        return len(self._queue) + self._inflight

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="omnii-obs-metrics", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.drain()
        self.drain()

    def _timestamp(self, wall: float) -> tuple[bytes, int]:
        """The line's date and time to the second (formatted once a second), and its microseconds."""
        second = int(wall)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
        return self._stamp, int((wall - second) * 1_000_000)

    def _encode(self, item: _Record) -> bytes:
        wall, metric, trace_id, span_id = item
        stamp, micros = self._timestamp(wall)
        line = self._encoder.encode(metric)[:-1] + b',"timestamp":"%s.%06dZ"' % (stamp, micros) + self._labels
        if span_id != INVALID_SPAN_ID:
            line += _IDS % (trace_id, span_id)
        return line + b"}\n"

    def _latency_line(self, item: _Latency) -> bytes:
        """The bytes ``ApiLatencyMetric`` encodes to, filled into a template made once per route and method."""
        wall, route, method, status, seconds, error, trace_hex, span_id = item
        second = int(wall)
        if second != self._stamp_second:
            self._timestamp(wall)
        stamp, micros = self._stamp, int((wall - second) * 1_000_000)
        duration = self._encoder.encode(milliseconds(seconds))
        traced = span_id != INVALID_SPAN_ID
        template = self._latency_templates.get((route, method, traced))
        if template is None:
            template = self._latency_template(route, method, traced)
        if error is not None:  # rare: a server error, whose type goes between duration and timestamp
            head, tail = template.split(b',"timestamp"', 1)
            template = head + b',"error":' + self._encoder.encode(error).replace(b"%", b"%%") + b',"timestamp"' + tail
        if traced:
            return template % (status, duration, stamp, micros, trace_hex, span_id)
        return template % (status, duration, stamp, micros)

    def _latency_template(self, route: str, method: str, traced: bool) -> bytes:
        if len(self._latency_templates) >= 4096:
            self._latency_templates.clear()
        head = self._encoder.encode(ApiLatencyMetric(route=route, method=method, status=0, duration=0.0))
        head = head[:-1].rsplit(b',"status":', 1)[0]
        template = self._latency_templates[(route, method, traced)] = (
            head.replace(b"%", b"%%")
            + b',"status":%d,"duration":%s,"timestamp":"%s.%06dZ"'
            + self._labels.replace(b"%", b"%%")
            + (_HEX_IDS if traced else b"")
            + b"}\n"
        )
        return template

    def drain(self) -> None:
        """Write every queued line now (the writer thread and ``close`` call this)."""
        with self._lock:
            chunk: list[bytes] = []
            queue = self._queue
            latency_line, encode, append = self._latency_line, self._encode, chunk.append
            while queue:
                item = queue.popleft()
                append(latency_line(item) if len(item) == 8 else encode(item))
            if chunk:
                self._inflight = len(chunk)
                try:
                    self._write(b"".join(chunk), len(chunk))
                finally:
                    self._inflight = 0

    def _write(self, data: bytes, lines: int) -> None:
        try:
            if self.sink in ("stdout", "stderr"):
                _write_stream(sys.stdout if self.sink == "stdout" else sys.stderr, data)
            elif self._file is not None:
                self._file.write(data)
                self._file.flush()
            else:
                raise OSError(f"metrics sink {self.sink!r} is not open")
        except (OSError, ValueError) as exc:
            self.dropped += lines
            self._report_failure(exc)

    def _report_failure(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            _logger.error(
                "metrics sink %r failed (%s); metric lines are dropped and counted, not logged again", self.sink, exc
            )

    def close(self) -> None:
        """Stop the thread after it wrote every queued line; may block as long as the sink does.

        The plugin calls this off the event loop with a bound (see :func:`~litestar_omnii_obs._bounded.run_bounded`).
        """
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        else:
            self.drain()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self.dropped:
            _logger.warning("%d metric line(s) were dropped", self.dropped)


def _write_stream(stream: IO[str], data: bytes) -> None:
    """Write ``data`` to a standard stream by file descriptor when it has one (no Python lock held)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # replaced stream (pytest capture, StringIO)
        stream.write(data.decode())
        stream.flush()
        return
    stream.flush()  # keep order with text already printed
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
