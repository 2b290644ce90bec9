"""Example service: one plugin gives latency records, metrics, Sentry and tracing.

Run it with ``make run`` and call it::

    curl localhost:8000/users/42
    curl -X POST localhost:8000/graph/query -d '{"query": "MATCH (n) RETURN n"}'
    curl -X POST localhost:8000/sync/calendar -d '{"user_id": "u1"}'
    curl localhost:8000/boom
"""

from __future__ import annotations

import asyncio
import os
from typing import cast, get_args

import msgspec
from litestar import Litestar, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody

from litestar_omnii_obs import (
    GraphQueryMetric,
    ObservabilityConfig,
    ObservabilityPlugin,
    SyncMetric,
    SyncSource,
    log_metric,
    timed_operation,
)

SOURCES: tuple[str, ...] = get_args(SyncSource)

#: This service's own name and version; the package's defaults are OpenTelemetry's (``unknown_service``,
#: no version). Variables set in the environment still win.
SERVICE = {"OTEL_SERVICE_NAME": "omnii-mcp", "APP_VERSION": "1.0.0"}


class GraphQuery(msgspec.Struct):
    query: str
    query_type: str = "cypher"


class SyncRequest(msgspec.Struct):
    user_id: str


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, object]:
    return {"id": user_id, "name": f"user-{user_id}"}


@post("/graph/query", status_code=200)
async def graph_query(data: JSONBody[GraphQuery]) -> dict[str, object]:
    async def run_query() -> list[dict[str, int]]:
        await asyncio.sleep(0.002)  # stands in for the graph database round trip
        return [{"node": i} for i in range(3)]

    rows, duration = await timed_operation("graph_query", run_query)
    log_metric(GraphQueryMetric(query_type=data.query_type, duration=duration, result_count=len(rows)))
    return {"rows": rows, "duration_ms": round(duration, 3)}


@post("/sync/{source:str}", status_code=200)
async def sync(source: FromPath[str], data: JSONBody[SyncRequest]) -> dict[str, object]:
    if source not in SOURCES:
        raise HTTPException(
            status_code=400, detail=f"unknown sync source {source!r}; expected one of {', '.join(SOURCES)}"
        )
    async with timed_operation(f"sync_{source}") as op:
        await asyncio.sleep(0.003)  # stands in for the provider's API
        items = 7
    log_metric(
        SyncMetric(source=cast("SyncSource", source), user_id=data.user_id, duration=op.duration, items_synced=items)
    )
    return {"source": source, "items_synced": items}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom: example failure for the error path")


app = Litestar(
    route_handlers=[health, get_user, graph_query, sync, boom],
    plugins=[ObservabilityPlugin(ObservabilityConfig.from_env({**SERVICE, **os.environ}))],
)
