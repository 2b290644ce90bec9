"""One rule for absent fields on every line: a field without a value is left out, never ``null``.

Every record goes through a real app's writer to a file, as a log shipper would read it; the
rule holds for the package's records and for a user's own, while a value equal to a default
(``outcome="ok"``, ``0``, ``False``) is still written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import get
from litestar.exceptions import HTTPException

from litestar_omnii_obs import (
    GraphQueryMetric,
    MetricRecord,
    MetricsConfig,
    ObservabilityConfig,
    TimedRecord,
    log_metric,
    timed_operation,
)
from tests.conftest import read_lines, running_app


class CacheLookup(TimedRecord, tag="cache_lookup"):
    hit: bool = False
    hits_so_far: int = 0
    key_prefix: str | None = None


class Signup(MetricRecord, tag="signup"):
    plan: str
    referrer: str | None


@get("/work")
async def work() -> str:
    async with timed_operation("fetch"):
        pass
    try:
        async with timed_operation("charge"):
            raise ValueError("card declined")
    except ValueError:
        pass
    log_metric(GraphQueryMetric(query_type="cypher", duration=1.0))
    log_metric(GraphQueryMetric(query_type="cypher", duration=1.0, result_count=0))
    log_metric(CacheLookup(duration=0.5))
    log_metric(CacheLookup(duration=0.5, hit=True, hits_so_far=3, key_prefix="user:"))
    log_metric(Signup(plan="free", referrer=None))
    return "done"


@get("/refused")
async def refused() -> None:
    raise HTTPException(status_code=503, detail="later")


def lines_of(sink: Path) -> list[dict[str, Any]]:
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(sink)))
    with running_app(config, work, refused) as client:
        assert client.get("/work").status_code == 200
        assert client.get("/refused").status_code == 503
    return read_lines(sink)


@pytest.fixture
def lines(sink: Path) -> list[dict[str, Any]]:
    return lines_of(sink)


def by_metric(lines: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["metric"] == metric]


def test_no_line_carries_null(sink: Path, lines: list[dict[str, Any]]) -> None:
    assert len(lines) == 9
    assert b"null" not in sink.read_bytes()


def test_a_successful_operation_has_no_error_field_and_says_ok(lines: list[dict[str, Any]]) -> None:
    fetch, charge = by_metric(lines, "operation_duration")
    assert (fetch["operation"], fetch["outcome"], "error" in fetch) == ("fetch", "ok", False)
    assert (charge["operation"], charge["outcome"], charge["error"]) == ("charge", "error", "ValueError")


def test_api_latency_has_no_error_field_without_an_exception_from_the_handler(lines: list[dict[str, Any]]) -> None:
    ok, refused = by_metric(lines, "api_latency")
    assert "error" not in ok
    assert (refused["status"], refused["error"]) == (503, "HTTPException")


def test_an_optional_count_is_left_out_when_unknown_and_written_when_zero(lines: list[dict[str, Any]]) -> None:
    unknown, zero = by_metric(lines, "graph_query_duration")
    assert "result_count" not in unknown
    assert zero["result_count"] == 0


def test_a_users_record_follows_the_same_rule(lines: list[dict[str, Any]]) -> None:
    first, second = by_metric(lines, "cache_lookup")
    assert {k: first[k] for k in ("duration", "hit", "hits_so_far")} == {
        "duration": 0.5,
        "hit": False,
        "hits_so_far": 0,
    }
    assert "key_prefix" not in first
    assert (second["hit"], second["hits_so_far"], second["key_prefix"]) == (True, 3, "user:")
    [signup] = by_metric(lines, "signup")
    assert signup["plan"] == "free"
    assert "referrer" not in signup


def test_fields_keep_their_order_when_one_is_left_out(lines: list[dict[str, Any]]) -> None:
    without_prefix, with_prefix = by_metric(lines, "cache_lookup")
    assert list(without_prefix) == [key for key in with_prefix if key != "key_prefix"]
