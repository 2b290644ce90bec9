"""The typed metric records, one JSON line each.

Every duration is in milliseconds, rounded to 3 decimals when the record is made, so
every line reads the same whoever built the record.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec.structs import force_setattr

__all__ = [
    "ApiLatencyMetric",
    "GraphQueryMetric",
    "Metric",
    "OperationMetric",
    "SyncMetric",
    "SyncSource",
    "milliseconds",
]

SyncSource = Literal["calendar", "tasks", "gmail", "contacts"]


def milliseconds(seconds: float) -> float:
    """``seconds`` in milliseconds rounded to 3 decimals: ``round(seconds * 1000, 3)`` at a fifth of its cost."""
    return int(seconds * 1_000_000 + 0.5) / 1000


class _Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="metric"):
    """Base of every record; the ``metric`` tag names its kind in the JSON line."""


class _Timed(_Record, frozen=True, kw_only=True):
    duration: float

    def __post_init__(self) -> None:
        force_setattr(self, "duration", round(self.duration, 3))


class ApiLatencyMetric(_Record, frozen=True, kw_only=True, tag="api_latency", omit_defaults=True):
    """One per HTTP request: route template, method, status sent, milliseconds to the last byte.

    ``method`` is ``_OTHER`` for methods outside the standard set (clients choose them);
    ``error`` is the exception type when the request failed with a server error (omitted otherwise).
    """

    route: str
    method: str
    status: int
    duration: float
    error: str | None = None


class GraphQueryMetric(_Timed, frozen=True, kw_only=True, tag="graph_query_duration"):
    """How long a graph query took, in milliseconds."""

    query_type: str
    result_count: int | None = None


class SyncMetric(_Timed, frozen=True, kw_only=True, tag="sync_duration"):
    """How long a sync job with an external source took, in milliseconds."""

    source: SyncSource
    user_id: str
    items_synced: int


class OperationMetric(_Timed, frozen=True, kw_only=True, tag="operation_duration"):
    """Written by :func:`~litestar_omnii_obs.timed_operation` for any awaited work, failed or not."""

    operation: str
    outcome: Literal["ok", "error"] = "ok"
    error: str | None = None


Metric = ApiLatencyMetric | GraphQueryMetric | SyncMetric | OperationMetric
"""The tagged union of every record this package writes."""
