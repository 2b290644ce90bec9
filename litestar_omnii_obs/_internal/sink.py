"""The metric-line writer: an in-memory queue and a daemon thread that writes JSON lines.

``submit`` only appends to a deque, so the event loop never waits on a disk or a pipe.
Each app's plugin owns one writer (its sink and its ``service``/``environment``
labels). The writer does not use stdlib logging: ``Litestar(...)`` reconfigures logging
when the app is built and would close a handler created before it.

Standard streams are written with ``os.write`` on their file descriptor, holding no
Python lock: a pipe nobody reads can stall the writer thread, never the interpreter's
own shutdown, and the plugin's shutdown gives up on it after a bound.

Lines are written whole: each write is at most ``PIPE_BUF`` bytes of whole lines (a longer line
alone), so server workers sharing one stdout pipe, or processes appending to one file (opened
``O_APPEND``), never splice each other's lines. A record that cannot be encoded costs only its
own line; nothing a record or a sink does stops the writer thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO

import msgspec
from opentelemetry.trace import INVALID_SPAN_ID

from litestar_omnii_obs._internal.config import ObservabilityConfig
from litestar_omnii_obs._internal.records import ApiLatencyMetric, MetricRecord, encode_record, milliseconds

__all__ = ["MetricWriter"]

_logger = logging.getLogger("litestar_omnii_obs")

#: Extra fields for a request's line (``ObservabilityConfig.enrich``'s declared keys), or ``None``.
_Extra = dict[str, str | int | float | bool] | None
#: A typed record: (wall time, record, trace id, span id, sampled, extra fields): 6 items.
_Record = tuple[float, MetricRecord, int, int, bool, _Extra]
#: A latency record queued without building the typed record:
#: (wall time, route, method, status, seconds, error, trace id as 32 hex digits, span id, sampled, extra
#: fields): 10 items.
_Latency = tuple[float, str, str, int, float, str | None, bytes, int, bool, _Extra]
#: The ids of the span a line was written under, and whether its trace is sampled (recorded and exported).
_IDS = b',"trace_id":"%032x","span_id":"%016x","sampled":%s'
_HEX_IDS = b',"trace_id":"%s","span_id":"%016x","sampled":%s'
_SAMPLED = (b"false", b"true")
#: The most bytes one write to a pipe puts in it without interleaving with another process's writes.
PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
#: Lines encoded between two hand-backs of the GIL in :meth:`MetricWriter.drain` (about 0.3 ms of work).
LINES_PER_SLICE = 128


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
        self._fd: int | None = None
        self._failed = False
        self._closed = False
        #: Lines lost because the queue was full or the writer closed.
        self.lost_queue_full = 0
        #: Records that could not be encoded (each logged once per record type).
        self.lost_encoding = 0
        #: Lines a failing sink did not take, or that a blocked sink still held when it was given up on.
        self.lost_sink = 0
        self._unencodable: set[str] = set()
        self._broken = False
        self._abandoned = False
        self._inflight = 0
        self._stamp_second = -1
        self._stamp = b""
        self._latency_templates: dict[tuple[str, str, bool], bytes] = {}
        self.off = self.sink == "off"
        if self.sink not in ("stdout", "stderr", "off"):
            try:
                self._fd = os.open(self.sink, _FILE_FLAGS, 0o644)  # kept open until close()
            except OSError as exc:
                self._report_failure(exc)

    def abandon(self) -> int:
        """Count the lines still queued or being written as lost to the sink, and return how many.

        For a shutdown that gave up waiting on :meth:`close` (a blocked sink): those lines are then in
        ``lost_sink`` and :meth:`loss_summary`. Counted once; a write still blocked that fails later
        is not counted again.
        """
        if self._abandoned:
            return 0
        self._abandoned = True
        pending = self.pending()
        self.lost_sink += pending
        return pending

    @property
    def dropped(self) -> int:
        """Every line lost, whatever the reason (the sum of the ``lost_*`` counters)."""
        return self.lost_queue_full + self.lost_encoding + self.lost_sink

    def loss_summary(self) -> str | None:
        """One line saying how many metric lines were lost and why; ``None`` when none was."""
        dropped = self.dropped
        return f"metric lines: {dropped} lost ({self._loss_reasons()})" if dropped else None

    def _loss_reasons(self) -> str:
        return (
            f"{self.lost_queue_full} queue full, {self.lost_encoding} failed encoding, "
            f"{self.lost_sink} sink failed or blocked"
        )

    def start(self) -> None:
        """Start the writer thread now (the plugin's lifespan does, before the first request).

        Idempotent; does nothing when the sink is ``off`` or the writer is closed. Without it, the
        first line queued starts the thread.
        """
        if not self.off:
            self._start()

    def submit(
        self, metric: MetricRecord, trace_id: int, span_id: int, sampled: bool = False, extra: _Extra = None
    ) -> None:
        """Queue one record with its trace ids and whether its trace is sampled; never blocks or raises."""
        if self._accepts():
            self._queue.append((time.time(), metric, trace_id, span_id, sampled, extra))

    def submit_latency(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        error: str | None,
        trace_hex: bytes,
        span_id: int,
        sampled: bool = False,
        extra: _Extra = None,
    ) -> None:
        """Queue an ``api_latency`` line from its fields (the request path, when no one needs the typed record).

        The line is the one :class:`ApiLatencyMetric` encodes to; rounding and encoding happen in the
        writer thread. ``trace_hex`` is the trace id already formatted (for ``X-Request-ID``), ``b""`` without one.
        """
        queue = self._queue
        # The usual case is settled by the first test; _accepts starts the thread and counts drops.
        if (len(queue) < self._max_queue and self._thread is not None and not self._closed) or self._accepts():
            queue.append((time.time(), route, method, status, seconds, error, trace_hex, span_id, sampled, extra))

    def _accepts(self) -> bool:
        if self.off:
            return False
        if len(self._queue) >= self._max_queue or self._closed:
            self.lost_queue_full += 1
            if self.lost_queue_full == 1:
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
        wall, metric, trace_id, span_id, sampled, extra = item
        stamp, micros = self._timestamp(wall)
        line = encode_record(self._encoder, metric)[:-1] + b',"timestamp":"%s.%06dZ"' % (stamp, micros) + self._labels
        if span_id != INVALID_SPAN_ID:
            line += _IDS % (trace_id, span_id, _SAMPLED[sampled])
        if extra:
            line += b"," + self._encoder.encode(extra)[1:-1]
        return line + b"}\n"

    def _latency_line(self, item: _Latency) -> bytes:
        """The bytes ``ApiLatencyMetric`` encodes to, filled into a template made once per route and method."""
        wall, route, method, status, seconds, error, trace_hex, span_id, sampled, extra = item
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
            line = template % (status, duration, stamp, micros, trace_hex, span_id, _SAMPLED[sampled])
        else:
            line = template % (status, duration, stamp, micros)
        if extra:  # the enrich keys the line carries: after the ids, before the closing brace
            line = line[:-2] + b"," + self._encoder.encode(extra)[1:-1] + b"}\n"
        return line

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
        """Write every queued line now (the writer thread and ``close`` call this); never raises.

        A record that cannot be encoded is dropped, counted and logged once per record type; a
        failing sink drops (and counts) only the lines it did not take.

        Encoding holds the GIL, and the event loop waits for it. In one piece, a drain held it
        for up to 1.0 ms at 5,000 requests/s and 2.1 ms at 15,000 (in-process, paced load). Every
        :data:`LINES_PER_SLICE` lines it is handed back (``time.sleep(0)``): the longest stretch
        was then 0.6 and 0.9 ms (the last one includes the writes), for the same work in all.
        """
        try:
            with self._lock:
                count = len(self._queue)  # only this method takes from the queue; appends go on meanwhile
                if not count:
                    return
                self._inflight = count
                lines = self._encode_queued(count)
                if lines:
                    self._write(lines)
                self._inflight = 0
        except Exception as exc:  # a bug of ours: the lines taken are counted, the thread goes on
            if not self._abandoned:  # counted already by abandon()
                self.lost_sink += self._inflight
            self._inflight = 0
            if not self._broken:
                self._broken = True
                _logger.exception("metric writer failed unexpectedly (%s); the lines it held are counted as lost", exc)

    def _encode_queued(self, count: int) -> list[bytes]:
        """The first ``count`` queued records as lines, taken off the queue; the GIL handed back between slices.

        A record that cannot be encoded is dropped and counted (``lost_encoding``), not returned.
        """
        lines: list[bytes] = []
        latency_line, encode, append, take = self._latency_line, self._encode, lines.append, self._queue.popleft
        for position in range(count):
            if position and not position % LINES_PER_SLICE:
                time.sleep(0)  # hand the GIL back to the event loop between slices (see drain's docstring)
            item = take()
            try:
                append(encode(item) if len(item) == 6 else latency_line(item))
            except Exception as exc:
                self._drop_unencodable(item, exc)
        return lines

    def _drop_unencodable(self, item: _Record | _Latency, exc: Exception) -> None:
        self.lost_encoding += 1
        self._inflight -= 1
        kind = _type_name(item[1]) if len(item) == 6 else "api_latency request line"
        if kind not in self._unencodable and len(self._unencodable) < 1024:
            self._unencodable.add(kind)
            _logger.error(
                "metric record %s could not be encoded (%s: %s); such records are dropped and counted, "
                "not logged again",
                kind,
                type(exc).__name__,
                exc,
            )

    def _write(self, lines: list[bytes]) -> None:
        """Write ``lines`` in chunks of whole lines of at most ``PIPE_BUF`` bytes, one ``os.write`` each.

        A line longer than ``PIPE_BUF`` is written alone. When the sink fails, the lines it did not
        take whole are counted as lost (a line cut midway among them); the others are not.
        """
        done = 0  # lines of the chunks written whole
        partial = 0  # whole lines of the failed chunk that the sink took before failing
        try:
            if self.sink in ("stdout", "stderr"):
                target = _stream_target(sys.stdout if self.sink == "stdout" else sys.stderr)
            elif self._fd is not None:
                target = self._fd
            else:
                raise OSError(f"metrics sink {self.sink!r} is not open")
            write = os.write
            for data, count in _chunks(lines):
                if isinstance(target, int):
                    view = memoryview(data)
                    try:
                        while view:  # one write, unless the sink takes less (a line longer than PIPE_BUF)
                            view = view[write(target, view) :]
                    except Exception:
                        partial = data.count(b"\n", 0, len(data) - len(view))
                        raise
                else:  # replaced stream (pytest capture, StringIO)
                    target.write(data.decode())
                    target.flush()
                done += count
                self._inflight -= count
        except Exception as exc:  # OSError, ValueError (closed stream), or whatever a replaced stream raises
            self._inflight -= len(lines) - done
            if not self._abandoned:  # counted already by abandon()
                self.lost_sink += len(lines) - done - partial
            self._report_failure(exc)

    def _report_failure(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            _logger.error(
                "metrics sink %r failed (%s); metric lines are dropped and counted, not logged again", self.sink, exc
            )

    def close(self) -> None:
        """Stop the thread after it wrote every queued line; may block as long as the sink does.

        The plugin calls this off the event loop with a bound (see :func:`._bounded.run_bounded`).
        """
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        else:
            self.drain()
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.dropped:
            _logger.warning("%d metric line(s) were dropped (%s)", self.dropped, self._loss_reasons())


def _type_name(record: object) -> str:
    kind = type(record)
    return f"{kind.__module__}.{kind.__qualname__}"


def _stream_target(stream: IO[str] | None) -> int | IO[str]:
    """A standard stream's file descriptor (its buffer flushed first), or the stream when it has none."""
    if stream is None:  # no console (pythonw), or closed by the application
        raise OSError("the standard stream is None")
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # replaced stream (pytest capture, StringIO)
        return stream
    stream.flush()  # keep order with text already printed
    return fd


def _chunks(lines: list[bytes], limit: int = PIPE_BUF) -> Iterator[tuple[bytes, int]]:
    """``lines`` packed greedily into chunks of whole lines of at most ``limit`` bytes, with their line counts.

    A line longer than ``limit`` is a chunk of its own.
    """
    start = size = 0
    for index, line in enumerate(lines):
        length = len(line)
        if size + length > limit and index > start:
            yield b"".join(lines[start:index]), index - start
            start = index
            size = 0
        size += length
    if start < len(lines):
        yield b"".join(lines[start:]), len(lines) - start
