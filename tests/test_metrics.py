"""Metric records as JSON lines, ``log_metric`` and the three forms of ``timed_operation``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider

from litestar_omnii_obs import (
    ApiLatencyMetric,
    GraphQueryMetric,
    Metric,
    MetricRecord,
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    OperationMetric,
    SyncMetric,
    TimedRecord,
    flush_metrics,
    log_metric,
    timed_operation,
)
from litestar_omnii_obs._internal.records import milliseconds
from litestar_omnii_obs.testing import ObservabilityCapture
from tests.conftest import read_lines, running_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def metrics_file(sink: Path) -> Iterator[Path]:
    """A running app whose sink is ``sink``; code outside any request writes to it, as the only running app."""
    config = ObservabilityConfig(
        service_name="svc", environment="test", metrics=MetricsConfig(sink=str(sink), flush_interval=0.01)
    )
    with running_app(config):
        yield sink


def test_each_record_kind_is_one_json_line_with_common_fields(metrics_file: Path) -> None:
    log_metric(ApiLatencyMetric(route="/users/{id}", method="GET", status=200, duration=1.5))
    log_metric(GraphQueryMetric(query_type="cypher", duration=2.0, result_count=3))
    log_metric(SyncMetric(source="gmail", user_id="u1", duration=3.0, items_synced=9))
    flush_metrics()
    lines = read_lines(metrics_file)
    assert [line["metric"] for line in lines] == ["api_latency", "graph_query_duration", "sync_duration"]
    assert lines[0] | {"timestamp": None} == {
        "metric": "api_latency",
        "route": "/users/{id}",
        "method": "GET",
        "status": 200,
        "duration": 1.5,
        "timestamp": None,
        "service": "svc",
        "environment": "test",
    }
    assert lines[2]["source"] == "gmail"
    assert lines[2]["items_synced"] == 9
    for line in lines:
        assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None
        assert "trace_id" not in line


def test_records_round_trip_through_the_tagged_union(metrics_file: Path) -> None:
    record = SyncMetric(source="calendar", user_id="u", duration=1.0, items_synced=2)
    assert msgspec.json.decode(msgspec.json.encode(record), type=Metric) == record
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"metric":"sync_duration","source":"fax","user_id":"u","duration":1,"items_synced":1}', type=Metric
        )


def test_trace_and_span_ids_are_added_when_a_span_is_current(metrics_file: Path) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        log_metric(GraphQueryMetric(query_type="q", duration=1.0))
        context = span.get_span_context()
    flush_metrics()
    [line] = read_lines(metrics_file)
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


@pytest.mark.parametrize(
    ("route", "method", "error", "ids"),
    [
        ("/users/{user_id:int}", "GET", None, (0, 0)),
        ("/users/{user_id:int}", "GET", None, (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)),
        ("/100%/{name:str}", "_OTHER", "Key%sError", (7, 9)),
        ('/q"uote\\/ü/{x}', "POST", "ValueError", (0, 0)),
    ],
)
def test_request_lines_are_the_bytes_the_typed_record_encodes_to(
    tmp_path: Path, route: str, method: str, error: str | None, ids: tuple[int, int]
) -> None:
    """The request path queues fields, not a record; its line must read exactly as the record's would."""
    from litestar_omnii_obs._internal.sink import MetricWriter

    sink = tmp_path / "lines.jsonl"
    writer = MetricWriter(ObservabilityConfig(service_name="s%d", metrics=MetricsConfig(sink=str(sink))))
    seconds = 0.0123456
    trace_id, span_id = ids
    writer.submit_latency(route, method, 503, seconds, error, b"%032x" % trace_id if trace_id else b"", span_id)
    typed = ApiLatencyMetric(route=route, method=method, status=503, duration=milliseconds(seconds), error=error)
    writer.submit(typed, *ids)
    writer.close()
    fast, slow = (_without_timestamp(line) for line in sink.read_bytes().splitlines())
    assert fast == slow
    assert msgspec.json.decode(fast)["duration"] == 12.346


def _without_timestamp(line: bytes) -> bytes:
    head, rest = line.split(b',"timestamp":"', 1)
    return head + rest.split(b'"', 1)[1]


def test_milliseconds_rounds_as_round_does() -> None:
    values = [0.0, 1e-7, 0.0005, 0.0123456, 1.0, 2.5e-4, 123.4567891, 0.1 + 0.2]
    values += [i / 7919 for i in range(5000)]
    assert [milliseconds(v) for v in values] == [round(v * 1000, 3) for v in values]


@pytest.mark.asyncio
async def test_timed_operation_as_context_manager_decorator_and_awaitable(metrics_file: Path) -> None:
    async def fetch() -> list[int]:
        await asyncio.sleep(0.01)
        return [1, 2]

    @timed_operation("decorated")
    async def decorated(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async with timed_operation("block") as op:
        await asyncio.sleep(0.01)
    result, duration = await timed_operation("awaited", fetch)
    coro_result, _ = await timed_operation("coroutine", fetch())
    doubled = await decorated(21)
    assert isinstance(op.duration, float)
    assert op.duration >= 10
    assert (result, coro_result, doubled) == ([1, 2], [1, 2], 42)
    assert isinstance(duration, float)
    assert duration >= 10
    flush_metrics()
    lines = read_lines(metrics_file)
    assert [(line["operation"], line["outcome"]) for line in lines] == [
        ("block", "ok"),
        ("awaited", "ok"),
        ("coroutine", "ok"),
        ("decorated", "ok"),
    ]
    assert lines[1]["duration"] == duration


@pytest.mark.asyncio
async def test_failed_operation_is_recorded_and_its_exception_re_raised_unchanged(metrics_file: Path) -> None:
    boom = LookupError("graph down")

    async def failing() -> None:
        raise boom

    with pytest.raises(LookupError) as info:
        await timed_operation("graph_query", failing)
    assert info.value is boom
    flush_metrics()
    [line] = read_lines(metrics_file)
    assert (line["operation"], line["outcome"], line["error"]) == ("graph_query", "error", "LookupError")


@pytest.mark.asyncio
async def test_duration_is_a_float_after_the_block_and_an_error_before() -> None:
    async with timed_operation("block") as op:
        with pytest.raises(RuntimeError, match=r"timed_operation\('block'\)\.duration was read before"):
            _ = op.duration
    assert isinstance(op.duration, float)


# --------------------------------------------------------------------------- your own records


class CacheLookup(TimedRecord, tag="cache_lookup"):
    hit: bool


class Signup(MetricRecord, tag="signup"):
    plan: str


@get("/cached")
async def cached() -> str:
    async with timed_operation("cache_get") as op:
        await asyncio.sleep(0)
    log_metric(CacheLookup(duration=op.duration, hit=True))
    log_metric(CacheLookup(duration=1.23456, hit=False))
    log_metric(Signup(plan="pro"))
    return "ok"


@pytest.mark.asyncio
async def test_a_users_own_records_are_written_and_captured_typed(
    sink: Path, obs_capture: ObservabilityCapture
) -> None:
    config = ObservabilityConfig(service_name="svc", metrics=MetricsConfig(sink=str(sink)))
    async with AsyncTestClient(Litestar(route_handlers=[cached], plugins=[ObservabilityPlugin(config)])) as client:
        assert (await client.get("/cached")).text == "ok"

    first, second = obs_capture.records(CacheLookup)
    assert (first.hit, second) == (True, CacheLookup(duration=1.235, hit=False))  # rounded like ours
    assert obs_capture.records(Signup) == [Signup(plan="pro")]
    assert [type(r) for r in obs_capture.records()] == [
        OperationMetric,
        CacheLookup,
        CacheLookup,
        Signup,
        ApiLatencyMetric,
    ]
    lines = [line for line in read_lines(sink) if line["metric"] in ("cache_lookup", "signup")]
    assert [line["metric"] for line in lines] == ["cache_lookup", "cache_lookup", "signup"]
    assert lines[1] | {"timestamp": None, "trace_id": None, "span_id": None} == {
        "metric": "cache_lookup",
        "hit": False,
        "duration": 1.235,
        "timestamp": None,
        "service": "svc",
        "environment": "development",
        "trace_id": None,
        "span_id": None,
        "sampled": True,  # obs_capture records every span
    }
    raw = next(line for line in sink.read_bytes().splitlines() if b"cache_lookup" in line)
    assert raw.startswith(b'{"metric":"cache_lookup",')


def test_a_users_record_is_frozen_and_keyword_only_like_ours() -> None:
    record = CacheLookup(duration=2.0, hit=True)
    with pytest.raises(AttributeError):
        record.hit = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        CacheLookup(2.0, True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="MetricRecord"):
        log_metric({"metric": "cache_lookup"})  # type: ignore[arg-type]


USER_MODULE = """
    from __future__ import annotations

    from litestar_omnii_obs import MetricRecord, TimedRecord, log_metric, timed_operation
    from litestar_omnii_obs.testing import ObservabilityCapture


    class CacheLookup(TimedRecord, tag="cache_lookup"):
        hit: bool


    class Signup(MetricRecord, tag="signup"):
        plan: str


    @timed_operation("lookup")
    async def lookup(key: str, *, fresh: bool = False) -> int:
        return len(key)


    async def handler(capture: ObservabilityCapture) -> None:
        log_metric(CacheLookup(duration=1.0, hit=True))
        log_metric(Signup(plan="pro"))
        size: int = await lookup("k", fresh=True)
        async with timed_operation("block") as op:
            pass
        ms: float = op.duration
        log_metric(CacheLookup(duration=op.duration, hit=size > 0))
        lookups: list[CacheLookup] = capture.records(CacheLookup)
        hit: bool = lookups[0].hit
        every: list[MetricRecord] = capture.records()
        result, took = await timed_operation("awaited", lookup("x"))
        total: int = result
        elapsed: float = took
        print(ms, hit, every, total, elapsed)
"""

MISTAKES = """
    from litestar_omnii_obs import timed_operation


    @timed_operation("lookup")
    async def lookup(key: str) -> int:
        return len(key)


    async def handler() -> None:
        text: str = await lookup("k")
        await lookup(1)
        async with timed_operation("block") as op:
            pass
        nothing: None = op.duration
        print(text, nothing)
"""


MISTAKES_PLAIN = """
    from litestar_omnii_obs import timed_operation


    @timed_operation("count")
    def count(key: str) -> int:
        return len(key)


    def caller() -> None:
        text: str = count("k")
        count(1)
        with timed_operation("block") as op:
            pass
        nothing: None = op.duration
        print(text, nothing)
"""


def _mypy_strict(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "user_module.py"
    module.write_text(textwrap.dedent(source))
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", "", str(module)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)


def test_a_users_code_type_checks_with_mypy_strict(tmp_path: Path) -> None:
    done = _mypy_strict(tmp_path, USER_MODULE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("source", "function"), [(MISTAKES, "lookup"), (MISTAKES_PLAIN, "count")])
def test_mypy_sees_the_decorated_signature_and_the_duration_type(tmp_path: Path, source: str, function: str) -> None:
    # An async function and `async with`, then a plain function and a plain `with`: the same three mistakes.
    done = _mypy_strict(tmp_path, source)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line.split(": error: ", 1)[1] for line in done.stdout.splitlines() if ": error: " in line]
    assert errors == [
        'Incompatible types in assignment (expression has type "int", variable has type "str")  [assignment]',
        f'Argument 1 to "{function}" has incompatible type "int"; expected "str"  [arg-type]',
        'Incompatible types in assignment (expression has type "float", variable has type "None")  [assignment]',
    ]


@pytest.mark.asyncio
async def test_awaiting_without_an_operation_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="needs an operation"):
        await timed_operation("nothing")


def test_lines_queued_at_shutdown_are_written(metrics_file: Path) -> None:
    for i in range(5000):
        log_metric(OperationMetric(operation=f"op{i}", duration=float(i)))
    flush_metrics()
    lines = read_lines(metrics_file)
    assert [line["operation"] for line in lines] == [f"op{i}" for i in range(5000)]


def test_a_script_without_an_app_gets_every_line_before_it_exits() -> None:
    # log_metric with no app running writes to stdout from a daemon thread: the lines must not die with it.
    script = (
        "from litestar_omnii_obs import GraphQueryMetric, log_metric\n"
        "for i in range(500):\n"
        "    log_metric(GraphQueryMetric(query_type='neighbours', duration=1.5, result_count=i))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["result_count"] for line in lines] == list(range(500))
    assert {line["metric"] for line in lines} == {"graph_query_duration"}


# A child process whose stdout stalls: a slow real-process test, run by `make test`, not `make test-fast`.
@pytest.mark.reliability
def test_a_script_whose_stdout_nobody_reads_still_exits() -> None:
    # The exit-time write is bounded (metrics.shutdown_timeout): a full pipe cannot hold the process forever.
    script = (
        "from litestar_omnii_obs import GraphQueryMetric, log_metric\n"
        "for i in range(5000):\n"
        "    log_metric(GraphQueryMetric(query_type='q' * 200, duration=1.5, result_count=i))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.wait(timeout=60) == 0  # nobody read the pipe while it ran
    finally:
        process.kill()
        written = process.communicate()[0]
    assert 0 < written.count(b"\n") < 5000  # what fit in the pipe, then the bound gave up


def test_a_full_queue_drops_and_counts_instead_of_growing(sink: Path, obs_log: list[object]) -> None:
    with running_app(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink), max_queue=10, flush_interval=60))):
        for i in range(25):
            log_metric(OperationMetric(operation=f"op{i}", duration=1.0))
        flush_metrics()
    assert len(read_lines(sink)) == 10
    messages = [r.getMessage() for r in obs_log]  # type: ignore[attr-defined]
    assert sum(m.startswith("metrics queue full") for m in messages) == 1
    assert any("15 metric line(s) were dropped (15 queue full," in m for m in messages)


@pytest.mark.asyncio
async def test_lines_arrive_when_config_and_plugin_are_made_before_the_app(sink: Path) -> None:
    # As users write it: config and plugin first, then Litestar(...) reconfigures logging.
    plugin = ObservabilityPlugin(ObservabilityConfig(metrics=MetricsConfig(sink=str(sink))))

    @get("/work")
    async def work() -> str:
        async with timed_operation("inside"):
            await asyncio.sleep(0)
        return "ok"

    app = Litestar(route_handlers=[work], plugins=[plugin])
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/work")).text == "ok"
    assert [line["metric"] for line in read_lines(sink)] == ["operation_duration", "api_latency"]


def test_off_sink_writes_nothing(sink: Path) -> None:
    with running_app(ObservabilityConfig(metrics=MetricsConfig(sink="off"))):
        log_metric(OperationMetric(operation="x", duration=1.0))
        flush_metrics()
    assert not sink.exists()


def test_timed_operation_times_plain_code_too(metrics_file: Path) -> None:
    @timed_operation("count")
    def count(key: str) -> int:
        if not key:
            raise ValueError("empty")
        return len(key)

    assert count("abc") == 3  # called, not turned into a coroutine
    with pytest.raises(ValueError, match="empty"):
        count("")
    with timed_operation("block") as op:
        pass
    assert isinstance(op.duration, float)
    log_metric(OperationMetric(operation="whole", duration=2))
    flush_metrics()
    lines = [line for line in read_lines(metrics_file) if line["metric"] == "operation_duration"]
    assert [(line["operation"], line["outcome"], line.get("error")) for line in lines] == [
        ("count", "ok", None),
        ("count", "error", "ValueError"),
        ("block", "ok", None),
        ("whole", "ok", None),
    ]
    raw = [line for line in metrics_file.read_bytes().splitlines() if b'"whole"' in line]
    assert b'"duration":2.0' in raw[0]  # a float even when whole
