"""The typed metric records, one JSON line each.

Every duration is in milliseconds, rounded to 3 decimals, so every line reads the same
whoever built the record: a :class:`TimedRecord`'s when the record is made; ``api_latency``'s
when its line is written (the request path queues the raw seconds and the metric writer
rounds them with :func:`milliseconds`; an :class:`ApiLatencyMetric` you build keeps what you give it).

Your own records subclass :class:`MetricRecord` (or :class:`TimedRecord` for a
``duration``) with a ``tag``, which becomes the line's ``metric`` field::

    class CacheLookup(TimedRecord, tag="cache_lookup"):
        hit: bool

    log_metric(CacheLookup(duration=ms, hit=True))  # {"metric":"cache_lookup","duration":0.412,"hit":true,...}

One rule for every record, ours and yours: a field whose value is ``None`` is left out of the
line (never ``"field":null``); every other field is written, defaults included.
"""

from __future__ import annotations

from typing import Any, Literal, dataclass_transform

import msgspec
from msgspec.structs import astuple, force_setattr

__all__ = [
    "ApiLatencyMetric",
    "GraphQueryMetric",
    "Metric",
    "MetricRecord",
    "OperationMetric",
    "SyncMetric",
    "SyncSource",
    "TimedRecord",
    "WebSocketMetric",
    "encode_record",
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

    The writer adds ``timestamp``, ``service``, ``environment`` and, under a span, ``trace_id``,
    ``span_id`` and ``sampled`` to each line; don't name your fields after them. A field left
    ``None`` is not written.
    """


class TimedRecord(MetricRecord, frozen=True, kw_only=True):
    """A :class:`MetricRecord` with a ``duration`` in milliseconds, rounded to 3 decimals when made."""

    duration: float
    """Milliseconds (``timed_operation`` gives them), rounded to 3 decimals."""

    def __post_init__(self) -> None:
        force_setattr(self, "duration", float(round(self.duration, 3)))  # a float on the line even when whole


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


#: Every key an ``api_latency`` line has of its own: enriched attributes may not take these names.
API_LATENCY_LINE_KEYS = frozenset(
    {"metric", *ApiLatencyMetric.__struct_fields__, "timestamp", "service", "environment", "trace_id", "span_id"}
    | {"sampled"}
)


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


class WebSocketMetric(TimedRecord, frozen=True, kw_only=True, tag="websocket_session"):
    """One per websocket connection when it ends: route template, milliseconds open, how it closed.

    ``close_code`` is the code the server sent or the client's disconnect code (omitted when neither
    was seen); ``error`` the exception type when the handler failed (omitted otherwise).
    """

    route: str
    close_code: int | None = None
    error: str | None = None


Metric = ApiLatencyMetric | GraphQueryMetric | SyncMetric | OperationMetric | WebSocketMetric
"""The tagged union of the records this package itself writes (yours are :class:`MetricRecord` subclasses)."""


def encode_record(encoder: msgspec.json.Encoder, metric: MetricRecord) -> bytes:
    """``metric`` as a JSON object without its ``None`` fields: the one rule for absent fields on every line.

    msgspec's ``omit_defaults`` would also drop a field equal to a non-``None`` default (``outcome="ok"``,
    a user's ``count: int = 0``); only the fields without a value are left out here.
    """
    values = astuple(metric)
    if None not in values:  # the usual record: encoded as is
        return encoder.encode(metric)
    fields: dict[str, Any] = {metric.__struct_config__.tag_field or "metric": metric.__struct_config__.tag}
    for name, value in zip(metric.__struct_encode_fields__, values, strict=True):
        if value is not None:
            fields[name] = value
    return encoder.encode(fields)
