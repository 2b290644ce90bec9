"""The metric writer: whole lines in writes of at most PIPE_BUF, exact loss counts, and a bad record costs only itself.

The writers here write to real pipes and files. A pipe made with ``O_DIRECT`` is in packet mode: each
``read`` returns what one ``write`` put in it (a write longer than ``PIPE_BUF`` is cut into packets of
``PIPE_BUF``), so the tests see every write the writer made.
"""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from litestar_omnii_obs import (
    GraphQueryMetric,
    MetricsConfig,
    ObservabilityConfig,
    OperationMetric,
    flush_metrics,
    log_metric,
)
from litestar_omnii_obs._internal import runtime
from litestar_omnii_obs._internal.records import MetricRecord
from litestar_omnii_obs._internal.sink import MetricWriter
from tests.conftest import read_lines, running_app, wait_until

PIPE_BUF = select.PIPE_BUF


class OpaqueMetric(MetricRecord, frozen=True, kw_only=True, tag="opaque"):
    """A user's record with a field msgspec cannot encode when it holds an arbitrary object."""

    payload: Any


class OtherOpaqueMetric(MetricRecord, frozen=True, kw_only=True, tag="other_opaque"):
    payload: object


def writer_for(sink: str | Path, *, service: str = "svc", flush_interval: float = 60.0) -> MetricWriter:
    config = ObservabilityConfig(
        service_name=service, metrics=MetricsConfig(sink=str(sink), flush_interval=flush_interval)
    )
    return MetricWriter(config)


def operation(i: int, pad: int = 0) -> OperationMetric:
    return OperationMetric(operation=f"op{i:05d}" + "x" * pad, duration=1.0)


def read_packets(fd: int, into: list[bytes], *, size: int = 1 << 16, pause: float = 0.0) -> None:
    """Read ``fd`` to its end: each read (one packet, in packet mode) appended to ``into``."""
    while chunk := os.read(fd, size):
        into.append(chunk)
        if pause:
            time.sleep(pause)


@contextmanager
def stdout_on(stream: Any) -> Iterator[None]:
    """``sys.stdout`` is ``stream`` inside the block (set in the test's body: pytest's capture resets it between
    a fixture's set-up and the test)."""
    previous = sys.stdout
    sys.stdout = stream
    try:
        yield
    finally:
        sys.stdout = previous


def test_every_write_is_whole_lines_of_at_most_pipe_buf_packed_greedily() -> None:
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("packet-mode pipes are Linux's")
    read_end, write_end = os.pipe2(os.O_DIRECT)  # packet mode: one read returns one write (or PIPE_BUF of it)
    packets: list[bytes] = []
    reader = threading.Thread(target=read_packets, args=(read_end, packets))
    reader.start()
    sizes = [i % 97 for i in range(600)]
    long_at = 300
    try:
        with open(write_end, "w") as stream, stdout_on(stream):
            writer = writer_for("stdout")
            for i, pad in enumerate(sizes):
                writer.submit(operation(i, 3 * PIPE_BUF if i == long_at else pad), 0, 0)
            writer.drain()
            writer.close()
    finally:
        reader.join(10)
        os.close(read_end)
    assert writer.dropped == 0

    lines = b"".join(packets).splitlines(keepends=True)
    assert [json.loads(line)["operation"][:7] for line in lines] == [f"op{i:05d}" for i in range(len(sizes))]
    long_line = lines[long_at]
    assert len(long_line) > 3 * PIPE_BUF
    # The packets of the long line are its own: the writes before and after it end at line boundaries.
    writes: list[bytes] = []
    for packet in packets:
        if writes and not writes[-1].endswith(b"\n"):
            writes[-1] += packet  # a write longer than PIPE_BUF arrives as several packets
        else:
            writes.append(packet)
    assert long_line in writes
    for write in writes:
        assert write.endswith(b"\n")
        assert len(write) <= PIPE_BUF or write == long_line
    # Greedy: a write ends only where the next line would not have fitted.
    first_lines = [write.splitlines(keepends=True)[0] for write in writes]
    for write, next_first in zip(writes, first_lines[1:], strict=False):
        if write != long_line and next_first != long_line:
            assert len(write) + len(next_first) > PIPE_BUF
    assert len(writes) < len(lines) / 10


def test_a_line_longer_than_pipe_buf_is_written_whole(tmp_path: Path) -> None:
    sink = tmp_path / "long.jsonl"
    writer = writer_for(sink)
    writer.submit(operation(1), 0, 0)
    writer.submit(operation(2, 5 * PIPE_BUF), 0, 0)
    writer.submit(operation(3), 0, 0)
    writer.close()
    lines = read_lines(sink)
    assert [line["operation"] for line in lines] == ["op00001", "op00002" + "x" * 5 * PIPE_BUF, "op00003"]
    assert writer.dropped == 0


def _write_concurrently(sinks: list[str], per_writer: int) -> list[MetricWriter]:
    """One writer thread per sink, each with its own MetricWriter (as server workers each have theirs)."""
    writers = [writer_for(sink, service=f"w{k}", flush_interval=0.001) for k, sink in enumerate(sinks)]

    def produce(writer: MetricWriter) -> None:
        for i in range(per_writer):
            writer.submit(operation(i, i % 131), 0, 0)
            if i % 50 == 49:
                time.sleep(0.001)
        writer.close()

    threads = [threading.Thread(target=produce, args=(writer,)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return writers


def _assert_whole_and_complete(data: bytes, writers: int, per_writer: int) -> None:
    seen: dict[str, list[str]] = {f"w{k}": [] for k in range(writers)}
    for raw in data.splitlines():
        line = json.loads(raw)  # a spliced line would not parse
        seen[line["service"]].append(line["operation"])
    expected = [f"op{i:05d}" + "x" * (i % 131) for i in range(per_writer)]
    assert seen == {service: expected for service in seen}


def test_writers_sharing_a_pipe_with_a_lagging_reader_never_splice_lines() -> None:
    # Four writers on one pipe, each through its own file description (as worker processes sharing stdout);
    # the reader lags like a log shipper under back-pressure, so every writer waits on a full pipe.
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_packets, args=(read_end, chunks), kwargs={"size": 4096, "pause": 0.001})
    reader.start()
    per_writer = 1500
    try:
        writers = _write_concurrently([f"/dev/fd/{write_end}"] * 4, per_writer)
    finally:
        os.close(write_end)
        reader.join(60)
        os.close(read_end)
    assert [writer.dropped for writer in writers] == [0, 0, 0, 0]
    _assert_whole_and_complete(b"".join(chunks), 4, per_writer)


def test_writers_appending_to_one_file_never_splice_lines(tmp_path: Path) -> None:
    sink = tmp_path / "shared.jsonl"
    per_writer = 1500
    writers = _write_concurrently([str(sink)] * 4, per_writer)
    assert [writer.dropped for writer in writers] == [0, 0, 0, 0]
    _assert_whole_and_complete(sink.read_bytes(), 4, per_writer)
    assert oct(sink.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_sink_failing_midway_counts_exactly_the_lines_it_did_not_take(tmp_path: Path) -> None:
    # The file may not grow past `limit` (RLIMIT_FSIZE): the third write is cut, the ones after fail (EFBIG).
    sink = tmp_path / "limited.jsonl"
    writer = writer_for(sink)
    total = 100
    for i in range(total):
        writer.submit(operation(i), 0, 0)
    limit = 2 * PIPE_BUF + 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        writer.drain()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    writer.close()
    data = sink.read_bytes()
    assert len(data) == limit
    assert not data.endswith(b"\n")  # the line the limit cut
    whole = data.split(b"\n")[:-1]
    assert [json.loads(line)["operation"] for line in whole] == [f"op{i:05d}" for i in range(len(whole))]
    assert len(whole) > 2 * (PIPE_BUF // len(whole[0]))  # some lines of the cut write arrived whole
    assert writer.lost_sink == total - len(whole)
    assert writer.dropped == writer.lost_sink
    assert writer.pending() == 0
    assert writer.loss_summary() == (
        f"metric lines: {total - len(whole)} lost (0 queue full, 0 failed encoding, "
        f"{total - len(whole)} sink failed or blocked)"
    )


def test_a_sink_that_cannot_be_opened_counts_every_line(tmp_path: Path, obs_log: list[logging.LogRecord]) -> None:
    writer = writer_for(tmp_path)  # a directory
    for i in range(7):
        writer.submit(operation(i), 0, 0)
    writer.drain()
    writer.close()
    assert (writer.lost_sink, writer.dropped) == (7, 7)
    assert sum("metrics sink" in r.getMessage() and r.levelno == logging.ERROR for r in obs_log) == 1


def test_a_replaced_stdout_without_a_file_descriptor_gets_every_line() -> None:
    stream = io.StringIO()
    with stdout_on(stream):
        writer = writer_for("stdout")
        for i in range(300):
            writer.submit(operation(i, i % 50), 0, 0)
        writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["operation"][:7] for line in lines] == [f"op{i:05d}" for i in range(300)]


def test_a_record_that_cannot_be_encoded_costs_only_itself(tmp_path: Path, obs_log: list[logging.LogRecord]) -> None:
    sink = tmp_path / "lines.jsonl"
    writer = writer_for(sink, flush_interval=0.005)
    writer.submit(operation(1), 0, 0)
    writer.submit(OpaqueMetric(payload=object()), 0, 0)  # type: ignore[arg-type]
    writer.submit(operation(2), 0, 0)
    writer.submit(OpaqueMetric(payload=object()), 0, 0)  # type: ignore[arg-type]
    writer.submit(OtherOpaqueMetric(payload=threading.Lock()), 0, 0)  # type: ignore[arg-type]
    # The request path's tuple, with a status that cannot be formatted (a caller's bug).
    writer.submit_latency("/r", "GET", "200", 0.001, None, b"", 0)  # type: ignore[arg-type]
    writer.submit(operation(3), 0, 0)
    # The writer thread writes them, and goes on writing after them.
    assert wait_until(lambda: len(read_lines(sink)) == 3)
    writer.submit(OpaqueMetric(payload=object()), 0, 0)  # type: ignore[arg-type]
    writer.submit(operation(4), 0, 0)
    assert wait_until(lambda: len(read_lines(sink)) == 4)
    writer.close()
    assert [line["operation"] for line in read_lines(sink)] == ["op00001", "op00002", "op00003", "op00004"]
    assert (writer.lost_encoding, writer.lost_sink, writer.lost_queue_full, writer.dropped) == (5, 0, 0, 5)
    errors = [r.getMessage() for r in obs_log if r.levelno == logging.ERROR]
    assert len(errors) == 3, errors  # once per record type
    assert sum("tests.test_sink.OpaqueMetric" in m for m in errors) == 1
    assert sum("tests.test_sink.OtherOpaqueMetric" in m for m in errors) == 1
    assert sum("api_latency" in m for m in errors) == 1
    assert writer.loss_summary() == "metric lines: 5 lost (0 queue full, 5 failed encoding, 0 sink failed or blocked)"


@pytest.fixture
def app_sink(tmp_path: Path) -> Iterator[Path]:
    sink = tmp_path / "app.jsonl"
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(sink), flush_interval=0.01))
    with running_app(config):
        yield sink


def test_log_metric_with_an_unencodable_record_never_raises_and_the_rest_is_written(
    app_sink: Path, obs_log: list[logging.LogRecord]
) -> None:
    log_metric(GraphQueryMetric(query_type="before", duration=1.0))
    log_metric(OpaqueMetric(payload=object()))  # type: ignore[arg-type]
    log_metric(GraphQueryMetric(query_type="after", duration=1.0))
    flush_metrics()  # drains in this thread: must not raise
    flush_metrics()
    assert [line["query_type"] for line in read_lines(app_sink)] == ["before", "after"]
    assert runtime.current().writer.lost_encoding == 1
    assert sum("OpaqueMetric" in r.getMessage() for r in obs_log if r.levelno == logging.ERROR) == 1


def test_flush_metrics_never_raises_when_the_sink_does() -> None:
    class Exploding(io.StringIO):
        def write(self, text: str) -> int:
            raise RuntimeError("a stream that fails its own way")

    config = ObservabilityConfig(metrics=MetricsConfig(sink="stdout", flush_interval=60))
    with running_app(config):
        writer = runtime.current().writer
        with stdout_on(Exploding()):
            log_metric(GraphQueryMetric(query_type="q", duration=1.0))
            log_metric(OpaqueMetric(payload=object()))  # type: ignore[arg-type]
            flush_metrics()
        assert (writer.lost_sink, writer.lost_encoding) == (1, 1)


class NotARecord(msgspec.Struct, tag="api_latency"):
    route: str = "/"


@pytest.mark.parametrize("bad", [[1, 2], {"metric": "api_latency"}, "api_latency", None, NotARecord()])
def test_log_metric_rejects_what_is_not_a_record_and_writes_nothing(app_sink: Path, bad: object) -> None:
    with pytest.raises(TypeError, match=r"log_metric expects a metric record .*ApiLatencyMetric.*, got "):
        log_metric(bad)  # type: ignore[arg-type]
    flush_metrics()
    assert read_lines(app_sink) == []
    assert runtime.current().writer.dropped == 0


def test_log_metric_names_the_type_it_got(app_sink: Path) -> None:
    with pytest.raises(TypeError, match=r"got list$"):
        log_metric([1, 2])  # type: ignore[arg-type]


def test_queue_full_counts_and_summary(tmp_path: Path) -> None:
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(tmp_path / "q.jsonl"), max_queue=3, flush_interval=60))
    writer = MetricWriter(config)
    assert writer.loss_summary() is None
    for i in range(5):
        writer.submit(operation(i), 0, 0)
    writer.submit_latency("/r", "GET", 200, 0.001, None, b"", 0)
    assert (writer.lost_queue_full, writer.dropped) == (3, 3)
    writer.close()
    writer.submit(operation(9), 0, 0)  # after close
    assert writer.lost_queue_full == 4
    assert writer.loss_summary() == "metric lines: 4 lost (4 queue full, 0 failed encoding, 0 sink failed or blocked)"
    assert len(read_lines(tmp_path / "q.jsonl")) == 3


def _writer_threads() -> int:
    return sum(thread.name == "omnii-obs-metrics" for thread in threading.enumerate())


def test_start_runs_the_writer_thread_before_the_first_line(tmp_path: Path) -> None:
    sink = tmp_path / "started.jsonl"
    writer = writer_for(sink, flush_interval=0.005)
    before = _writer_threads()
    writer.start()
    writer.start()
    assert _writer_threads() == before + 1
    writer.submit(operation(1), 0, 0)
    assert wait_until(lambda: len(read_lines(sink)) == 1)  # written by the thread, no drain called
    writer.close()
    assert _writer_threads() == before

    writer.start()  # closed: nothing starts
    off = writer_for("off")
    off.start()
    assert _writer_threads() == before


def test_abandon_counts_what_a_blocked_sink_still_holds(tmp_path: Path) -> None:
    writer = writer_for(tmp_path / "a.jsonl")
    for i in range(5):
        writer.submit(operation(i), 0, 0)
    assert writer.abandon() == 5
    assert writer.abandon() == 0
    assert (writer.lost_sink, writer.dropped) == (5, 5)
    writer.close()
