"""The typed metric records, one JSON line each.

Every duration is in milliseconds, rounded to 3 decimals when the record is made, so
every line reads the same whoever built the record.

Your own records subclass :class:`MetricRecord` (or :class:`TimedRecord` for a
``duration``) with a ``tag``, which becomes the line's ``metric`` field::

    class CacheLookup(TimedRecord, tag="cache_lookup"):
        hit: bool

    log_metric(CacheLookup(duration=ms, hit=True))  # {"metric":"cache_lookup","duration":0.412,"hit":true,...}
"""

from __future__ import annotations

from typing import Literal, dataclass_transform

import msgspec
from msgspec.structs import force_setattr

__all__ = [
    "ApiLatencyMetric",
    "GraphQueryMetric",
    "Metric",
    "MetricRecord",
    "OperationMetric",
    "SyncMetric",
    "SyncSource",
    "TimedRecord",
    "milliseconds",
]

SyncSource = Literal["calendar", "tasks", "gmail", "contacts"]


def milliseconds(seconds: float) -> float:
    """``seconds`` in milliseconds rounded to 3 decimals: ``round(seconds * 1000, 3)`` at a fifth of its cost."""
    return int(seconds * 1_000_000 + 0.5) / 1000


# Subclasses are frozen and keyword-only at run time (msgspec inherits both); this says so to type
# checkers, so ``class CacheLookup(TimedRecord, tag="cache_lookup")`` needs no ``frozen=True``.
@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(msgspec.field,))
class MetricRecord(msgspec.Struct, frozen=True, kw_only=True, tag_field="metric"):
    """Base of every metric record, ours and yours; the ``tag`` names its kind in the JSON line's ``metric``.

    Subclass it with a tag and typed fields (frozen and keyword-only, as the base is)::

        class CacheLookup(MetricRecord, tag="cache_lookup"):
            hit: bool

    The writer adds ``timestamp``, ``service``, ``environment`` and, under a span, ``trace_id``
    and ``span_id`` to each line; don't name your fields after them.
    """


class TimedRecord(MetricRecord, frozen=True, kw_only=True):
    """A :class:`MetricRecord` with a ``duration`` in milliseconds, rounded to 3 decimals when made."""

    duration: float
    """Milliseconds (``timed_operation`` gives them), rounded to 3 decimals."""

    def __post_init__(self) -> None:
        force_setattr(self, "duration", round(self.duration, 3))


class ApiLatencyMetric(MetricRecord, frozen=True, kw_only=True, tag="api_latency", omit_defaults=True):
    """One per HTTP request: route template, method, status sent, milliseconds to the last byte.

    ``method`` is ``_OTHER`` for methods outside the standard set (clients choose them);
    ``error`` is the exception type when the request failed with a server error (omitted otherwise).
    """

    route: str
    method: str
    status: int
    duration: float
    error: str | None = None


class GraphQueryMetric(TimedRecord, frozen=True, kw_only=True, tag="graph_query_duration"):
    """How long a graph query took, in milliseconds."""

    query_type: str
    result_count: int | None = None


class SyncMetric(TimedRecord, frozen=True, kw_only=True, tag="sync_duration"):
    """How long a sync job with an external source took, in milliseconds."""

    source: SyncSource
    user_id: str
    items_synced: int


class OperationMetric(TimedRecord, frozen=True, kw_only=True, tag="operation_duration"):
    """Written by :func:`~litestar_omnii_obs.timed_operation` for any awaited work, failed or not."""

    operation: str
    outcome: Literal["ok", "error"] = "ok"
    error: str | None = None


Metric = ApiLatencyMetric | GraphQueryMetric | SyncMetric | OperationMetric
"""The tagged union of the records this package itself writes (yours are :class:`MetricRecord` subclasses)."""
