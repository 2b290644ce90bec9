"""Exactly one ``api_latency`` record per request, on every path a request can take.

Each test runs an app with the plugin and reads the JSON lines it wrote to a file sink
(leaving the client or server stops the app, which writes every queued line). Most drive
the app in-process with Litestar's ``AsyncTestClient``; the ones about the wire (time to
the last byte, background tasks after the response is sent, concurrent connections) run
it under uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import AsyncTestClient
from litestar.types import Receive, Scope, Send

from litestar_omnii_obs import LatencyConfig, MetricsConfig, ObservabilityConfig, ObservabilityPlugin
from tests.conftest import read_lines, serve, wait_until


def make_config(sink: Path, **latency: Any) -> ObservabilityConfig:
    return ObservabilityConfig(
        metrics=MetricsConfig(sink=str(sink), flush_interval=0.01),
        latency=LatencyConfig(**latency),
    )


def latency_records(sink: Path) -> list[dict[str, Any]]:
    return [r for r in read_lines(sink) if r["metric"] == "api_latency"]


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    return {"id": user_id}


@get("/health")
async def health() -> str:
    return "ok"


def deny_401(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    raise NotAuthorizedException("who are you")


def deny_403(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    raise PermissionDeniedException("not you")


@get("/private", guards=[deny_401])
async def private() -> str:
    return "never"


@get("/admin", guards=[deny_403])
async def admin() -> str:
    return "never"


@post("/conflict")
async def conflict() -> None:
    raise HTTPException(status_code=409, detail="already exists")


@get("/crash")
async def crash() -> None:
    raise RuntimeError("handler bug")


def run_app(sink: Path, handlers: list[Any], **kwargs: Any) -> Litestar:
    latency = kwargs.pop("latency", {})
    return Litestar(
        route_handlers=handlers,
        plugins=[ObservabilityPlugin(make_config(sink, **latency))],
        **kwargs,
    )


@pytest.mark.asyncio
async def test_each_status_path_gets_one_record_with_route_template_and_status(sink: Path) -> None:
    app = run_app(sink, [get_user, private, admin, conflict, crash])
    async with AsyncTestClient(app=app) as client:
        expected = [
            ((await client.get("/users/42")).status_code, "GET", "/users/{user_id}", 200),
            ((await client.get("/no/such/path")).status_code, "GET", "UNMATCHED", 404),
            ((await client.delete("/users/42")).status_code, "DELETE", "UNMATCHED", 405),
            ((await client.get("/private")).status_code, "GET", "/private", 401),
            ((await client.get("/admin")).status_code, "GET", "/admin", 403),
            ((await client.post("/conflict")).status_code, "POST", "/conflict", 409),
            ((await client.get("/crash")).status_code, "GET", "/crash", 500),
        ]
    for sent, _, _, status in expected:
        assert sent == status
    records = latency_records(sink)
    assert [(r["method"], r["route"], r["status"]) for r in records] == [(m, r, s) for _, m, r, s in expected]
    assert all(r["duration"] > 0 for r in records)
    assert "/users/42" not in {r["route"] for r in records}


@pytest.mark.asyncio
async def test_route_level_before_request_replaces_app_hook_but_record_remains(sink: Path) -> None:
    seen: list[str] = []

    async def route_hook(request: Request[Any, Any, Any]) -> None:
        seen.append("route")

    async def app_hook(request: Request[Any, Any, Any]) -> None:
        seen.append("app")

    @get("/own-hook", before_request=route_hook)
    async def own_hook() -> str:
        return "ok"

    app = run_app(sink, [own_hook], before_request=app_hook)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/own-hook")).text == "ok"
    assert seen == ["route"]
    assert [(r["route"], r["status"]) for r in latency_records(sink)] == [("/own-hook", 200)]


@pytest.mark.asyncio
async def test_user_app_level_hooks_still_run_and_short_circuit_is_returned(sink: Path) -> None:
    after: list[str] = []

    async def before(request: Request[Any, Any, Any]) -> dict[str, str] | None:
        if request.query_params.get("short"):
            return {"short": "circuit"}
        return None

    async def after_response(request: Request[Any, Any, Any]) -> None:
        after.append(request.url.path)

    app = run_app(sink, [get_user], before_request=before, after_response=after_response)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/users/1")).json() == {"id": 1}
        assert (await client.get("/users/2", params={"short": "1"})).json() == {"short": "circuit"}
    assert after == ["/users/1", "/users/2"]
    assert [(r["route"], r["status"]) for r in latency_records(sink)] == [("/users/{user_id}", 200)] * 2


@pytest.mark.asyncio
async def test_cached_response_is_recorded_on_hit_and_miss(sink: Path) -> None:
    calls: list[int] = []

    @get("/cached", cache=60)
    async def cached() -> dict[str, int]:
        calls.append(1)
        return {"calls": len(calls)}

    app = run_app(sink, [cached])
    async with AsyncTestClient(app=app) as client:
        bodies = [(await client.get("/cached")).json() for _ in range(3)]
    assert bodies == [{"calls": 1}] * 3
    assert calls == [1]
    assert [(r["route"], r["status"]) for r in latency_records(sink)] == [("/cached", 200)] * 3


def test_streaming_response_is_timed_to_its_last_byte(sink: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            await asyncio.sleep(0.02)
            yield f"chunk{i};".encode()

    @get("/stream")
    async def stream() -> Stream:
        return Stream(chunks())

    app = run_app(sink, [stream])
    with serve(app) as url:
        body = httpx.get(url + "/stream").text
    assert body == "".join(f"chunk{i};" for i in range(5))
    [record] = latency_records(sink)
    assert (record["route"], record["status"]) == ("/stream", 200)
    # Five awaited 20 ms sleeps happen before the last byte: they are inside the duration.
    assert record["duration"] >= 100


def test_record_is_written_before_background_tasks_finish(sink: Path) -> None:
    release = asyncio.Event()

    async def slow_task() -> None:
        await release.wait()

    @get("/with-task")
    async def with_task() -> Response[str]:
        return Response("done", background=BackgroundTask(slow_task))

    @get("/release")
    async def do_release() -> str:
        release.set()
        return "released"

    app = run_app(sink, [with_task, do_release])
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/with-task").text == "done"
        # The background task is still blocked, yet the record is already there.
        assert wait_until(lambda: len(latency_records(sink)) == 1)
        assert not release.is_set()
        assert client.get("/release").text == "released"
    assert [r["route"] for r in latency_records(sink)] == ["/with-task", "/release"]


@pytest.mark.asyncio
async def test_excluded_paths_and_opted_out_handlers_get_no_record(sink: Path) -> None:
    @get("/internal/{name:str}")
    async def internal(name: FromPath[str]) -> str:
        return name

    @get("/quiet", opt={"observability": False})
    async def quiet() -> str:
        return "shh"

    app = run_app(sink, [get_user, health, internal, quiet], latency={"exclude_paths": ("/health", "/internal/*")})
    async with AsyncTestClient(app=app) as client:
        statuses = [(await client.get(p)).status_code for p in ("/health", "/internal/x", "/quiet", "/users/7")]
    assert statuses == [200, 200, 200, 200]
    assert [r["route"] for r in latency_records(sink)] == ["/users/{user_id}"]


@pytest.mark.asyncio
async def test_exact_exclusion_of_one_concrete_path_leaves_the_rest_of_its_route(sink: Path) -> None:
    # "/users/0" and "/users/0/" fit the template "/users/{user_id:int}": only those paths lose their record,
    # while "/health" (no route can serve it) costs the other routes no per-request check.
    @get("/teams/{team:str}/members/{member:int}")
    async def member(team: FromPath[str], member: FromPath[int]) -> str:
        return f"{team}/{member}"

    app = run_app(sink, [get_user, member], latency={"exclude_paths": ("/users/0", "/teams/x/members/1", "/health")})
    async with AsyncTestClient(app=app) as client:
        paths = ("/users/0", "/users/1", "/users/0", "/teams/x/members/1", "/teams/y/members/1", "/users/10")
        statuses = [(await client.get(p)).status_code for p in paths]
    assert statuses == [200] * 6
    records = latency_records(sink)
    assert [(r["route"], r["status"]) for r in records] == [
        ("/users/{user_id}", 200),
        ("/teams/{team}/members/{member}", 200),
        ("/users/{user_id}", 200),
    ]


@pytest.mark.asyncio
async def test_exclusions_match_the_apps_own_path_under_a_root_path(sink: Path) -> None:
    # Behind a proxy (root_path "/api") the exclusions name the app's own paths, as its routes do.
    app = run_app(sink, [get_user, health], latency={"exclude_paths": ("/health", "/users/7")})
    async with AsyncTestClient(app=app, root_path="/api") as client:
        statuses = [(await client.get(p)).status_code for p in ("/health", "/users/7", "/users/8")]
    assert statuses == [200, 200, 200]
    assert [r["route"] for r in latency_records(sink)] == ["/users/{user_id}"]


@pytest.mark.asyncio
async def test_mounted_asgi_app_is_labelled_by_its_mount_path(sink: Path) -> None:
    from litestar.handlers import asgi

    @asgi("/mounted", is_mount=True, copy_scope=True)
    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"mounted"})

    app = run_app(sink, [mounted])
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/mounted/deep/file.txt")
    assert (response.status_code, response.text) == (202, "mounted")
    assert [(r["route"], r["status"]) for r in latency_records(sink)] == [("/mounted", 202)]


def test_200_concurrent_requests_give_exactly_200_records(sink: Path) -> None:
    app = run_app(sink, [get_user])

    async def hammer(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=url, limits=limits) as client:
            responses = await asyncio.gather(*(client.get(f"/users/{i}") for i in range(200)))
        return [r.status_code for r in responses]

    with serve(app) as url:
        statuses = asyncio.run(hammer(url))
    assert statuses == [200] * 200
    records = latency_records(sink)
    assert len(records) == 200
    assert {(r["route"], r["method"], r["status"]) for r in records} == {("/users/{user_id}", "GET", 200)}


@pytest.mark.asyncio
@pytest.mark.parametrize("sink_path", ["/dev/full", "/nonexistent-dir/metrics.jsonl"])
async def test_failing_sink_is_logged_once_and_never_breaks_a_request(
    sink_path: str, obs_log: list[logging.LogRecord]
) -> None:
    app = run_app(Path(sink_path), [get_user])
    async with AsyncTestClient(app=app) as client:
        statuses = [(await client.get(f"/users/{i}")).status_code for i in range(20)]
    assert statuses == [200] * 20
    failures = [r for r in obs_log if "metrics sink" in r.getMessage() and "failed" in r.getMessage()]
    assert len(failures) == 1
    assert sink_path in failures[0].getMessage()
