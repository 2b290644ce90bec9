"""The pytest plugin users get (``obs_capture``), used the way a user's own tests use it.

The fixture comes from the ``pytest11`` entry point (the package is installed), not from
``tests/conftest.py``. The first tests drive an app in-process with Litestar's
``AsyncTestClient`` (pytest-asyncio) and ``TestClient``; the last ones run small user test
files in a nested pytest run (``pytester``, in-process; it loads its plugins through their
entry points again) to show that a wrong assertion on the capture fails the user's test.
"""

from __future__ import annotations

import socket
import textwrap
from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.params import FromPath
from litestar.testing import AsyncTestClient, TestClient

from example_app.app import app
from litestar_omnii_obs import (
    ApiLatencyMetric,
    GraphQueryMetric,
    ObservabilityConfig,
    ObservabilityPlugin,
    OperationMetric,
    log_metric,
    timed_operation,
)
from litestar_omnii_obs.testing import ObservabilityCapture

pytest_plugins = ["pytester"]


# --------------------------------------------------------------------------- a user's app


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    return {"id": user_id}


@post("/graph/query", status_code=200)
async def graph_query() -> dict[str, int]:
    async def run_query() -> list[int]:
        return [1, 2, 3]

    rows, duration = await timed_operation("graph_query", run_query)
    log_metric(GraphQueryMetric(query_type="cypher", duration=duration, result_count=len(rows)))
    return {"rows": len(rows)}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom: handler bug")


def create_app(config: ObservabilityConfig | None = None) -> Litestar:
    """The app as a user's factory builds it: no DSN, no OTLP endpoint."""
    config = config if config is not None else ObservabilityConfig()
    assert config.sentry.dsn is None
    assert config.tracing.traces_endpoint is None
    return Litestar(route_handlers=[get_user, graph_query, boom], plugins=[ObservabilityPlugin(config)])


def exception_types(event: dict[str, Any]) -> list[str]:
    return [value["type"] for value in event["exception"]["values"]]


# --------------------------------------------------------------------------- in-process, AsyncTestClient


@pytest.mark.asyncio
async def test_logged_record_is_captured_typed(obs_capture: ObservabilityCapture) -> None:
    async with AsyncTestClient(app=create_app()) as client:
        response = await client.post("/graph/query")
    assert response.json() == {"rows": 3}
    (record,) = obs_capture.records(GraphQueryMetric)
    assert isinstance(record, GraphQueryMetric)
    assert (record.query_type, record.result_count) == ("cypher", 3)
    assert record.duration >= 0
    (operation,) = obs_capture.records(OperationMetric)
    assert (operation.operation, operation.outcome) == ("graph_query", "ok")
    # In the order they were made: the operation, the record the handler logged, then the request's.
    assert [type(m) for m in obs_capture.metrics] == [OperationMetric, GraphQueryMetric, ApiLatencyMetric]


@pytest.mark.asyncio
async def test_failing_route_gives_one_sentry_event_with_route_and_status_tags(
    obs_capture: ObservabilityCapture,
) -> None:
    async with AsyncTestClient(app=create_app()) as client:
        assert (await client.get("/users/1")).status_code == 200
        assert (await client.get("/boom")).status_code == 500
    (event,) = obs_capture.sentry_events
    assert event["tags"]["http.route"] == "/boom"
    assert event["tags"]["http.status_code"] == "500"
    assert exception_types(event) == ["RuntimeError"]
    assert event["exception"]["values"][-1]["value"] == "boom: handler bug"
    # The event carries the trace of the request's span.
    assert event["tags"]["trace_id"] == f"{obs_capture.span('GET /boom').context.trace_id:032x}"


@pytest.mark.asyncio
async def test_request_span_is_named_by_the_route_template(obs_capture: ObservabilityCapture) -> None:
    async with AsyncTestClient(app=create_app()) as client:
        response = await client.get("/users/42")
    assert response.status_code == 200
    span = obs_capture.span("GET /users/{user_id}")
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/users/{user_id}"
    assert span.attributes["url.path"] == "/users/42"
    assert span.attributes["http.response.status_code"] == 200
    assert response.headers["x-request-id"] == f"{span.context.trace_id:032x}"
    with pytest.raises(AssertionError, match="expected one span named 'GET /users/42', found 0"):
        obs_capture.span("GET /users/42")


@pytest.mark.asyncio
async def test_each_request_gets_one_api_latency_record(obs_capture: ObservabilityCapture) -> None:
    async with AsyncTestClient(app=create_app()) as client:
        for path in ("/users/1", "/users/2", "/no/such/path", "/boom"):
            await client.get(path)
    records = obs_capture.records(ApiLatencyMetric)
    assert [(r.method, r.route, r.status, r.error) for r in records] == [
        ("GET", "/users/{user_id}", 200, None),
        ("GET", "/users/{user_id}", 200, None),
        ("GET", "UNMATCHED", 404, None),
        ("GET", "/boom", 500, "RuntimeError"),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("run", ["first", "second"])
async def test_each_test_starts_with_an_empty_capture(obs_capture: ObservabilityCapture, run: str) -> None:
    # Run twice: if anything of the first run leaked into the second, the counts below would double.
    assert obs_capture.metrics == []
    assert obs_capture.spans == ()
    assert obs_capture.sentry_events == []
    async with AsyncTestClient(app=create_app()) as client:
        await client.get("/boom")
    assert len(obs_capture.records(ApiLatencyMetric)) == 1
    assert len(obs_capture.spans) == 1
    assert len(obs_capture.sentry_events) == 1


@pytest.mark.asyncio
async def test_clear_forgets_everything_captured_so_far(obs_capture: ObservabilityCapture) -> None:
    async with AsyncTestClient(app=create_app()) as client:
        await client.get("/boom")
        obs_capture.clear()
        await client.get("/users/7")
    assert obs_capture.sentry_events == []
    assert [r.route for r in obs_capture.records(ApiLatencyMetric)] == ["/users/{user_id}"]
    assert [span.name for span in obs_capture.spans] == ["GET /users/{user_id}"]


@pytest.mark.asyncio
async def test_needs_no_network(obs_capture: ObservabilityCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network used in a captured test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # What an app reads from an environment with no DSN and no endpoint.
    config = ObservabilityConfig.from_env({})
    async with AsyncTestClient(app=create_app(config)) as client:
        await client.post("/graph/query")
        await client.get("/boom")
    assert attempts == []
    assert len(obs_capture.records(GraphQueryMetric)) == 1
    assert len(obs_capture.sentry_events) == 1
    assert {span.name for span in obs_capture.spans} == {"POST /graph/query", "graph_query", "GET /boom"}


# --------------------------------------------------------------------------- in-process, sync TestClient


def test_sync_test_client_is_captured_the_same_way(obs_capture: ObservabilityCapture) -> None:
    with TestClient(app=create_app()) as client:
        assert client.post("/graph/query").json() == {"rows": 3}
        assert client.get("/users/5").status_code == 200
        assert client.get("/boom").status_code == 500
    (record,) = obs_capture.records(GraphQueryMetric)
    assert record.result_count == 3
    assert [(r.route, r.status) for r in obs_capture.records(ApiLatencyMetric)] == [
        ("/graph/query", 200),
        ("/users/{user_id}", 200),
        ("/boom", 500),
    ]
    (event,) = obs_capture.sentry_events
    assert (event["tags"]["http.route"], event["tags"]["http.status_code"]) == ("/boom", "500")
    assert exception_types(event) == ["RuntimeError"]
    assert obs_capture.span("GET /users/{user_id}").attributes["http.route"] == "/users/{user_id}"  # type: ignore[index]
    # The request spans, and the child span of the handler's timed_operation.
    assert sorted(span.name for span in obs_capture.spans) == [
        "GET /boom",
        "GET /users/{user_id}",
        "POST /graph/query",
        "graph_query",
    ]


# --------------------------------------------------------------------------- the README's example, verbatim


@pytest.mark.asyncio
async def test_graph_query_is_timed_and_failures_reach_sentry(obs_capture: ObservabilityCapture) -> None:
    async with AsyncTestClient(app=app) as client:  # the app's lifespan starts inside the test
        await client.post("/graph/query", json={"query": "MATCH (n) RETURN n"})
        await client.get("/boom")

    (query,) = obs_capture.records(GraphQueryMetric)
    assert query.result_count == 3
    requests = [(r.route, r.status) for r in obs_capture.records(ApiLatencyMetric)]
    assert requests == [("/graph/query", 200), ("/boom", 500)]
    (event,) = obs_capture.sentry_events
    assert event["tags"]["http.route"] == "/boom"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    span = obs_capture.span("POST /graph/query")
    assert (span.attributes or {}).get("http.route") == "/graph/query"


# --------------------------------------------------------------------------- a user's test run, in a nested pytest

USER_APP = """
    from litestar import Litestar, get
    from litestar.params import FromPath
    from litestar.testing import AsyncTestClient

    from litestar_omnii_obs import (
        ApiLatencyMetric, GraphQueryMetric, ObservabilityConfig, ObservabilityPlugin, capture_error, log_metric,
    )


    @get("/users/{user_id:int}")
    async def get_user(user_id: FromPath[int]) -> dict[str, int]:
        return {"id": user_id}


    @get("/graph")
    async def graph() -> dict[str, int]:
        log_metric(GraphQueryMetric(query_type="cypher", duration=1.5, result_count=3))
        return {"rows": 3}


    @get("/boom")
    async def boom() -> None:
        try:
            {}["user"]
        except KeyError as exc:
            capture_error(exc)  # reported here...
            raise RuntimeError("no user") from exc  # ...and again by the plugin, as the 500 it becomes


    def create_app() -> Litestar:
        return Litestar([get_user, graph, boom], plugins=[ObservabilityPlugin(ObservabilityConfig.from_env({}))])
"""

CORRECT_TEST = """
    import pytest


    @pytest.mark.asyncio
    async def test_graph_query_is_recorded(obs_capture):
        async with AsyncTestClient(app=create_app()) as client:
            await client.get("/graph")
            await client.get("/users/1")
        (record,) = obs_capture.records(GraphQueryMetric)
        assert record.result_count == 3
        assert [r.route for r in obs_capture.records(ApiLatencyMetric)] == ["/graph", "/users/{user_id}"]
        assert obs_capture.span("GET /users/{user_id}").attributes["http.route"] == "/users/{user_id}"
"""

MISSING_RECORD_TEST = """
    import pytest


    @pytest.mark.asyncio
    async def test_users_route_logs_a_graph_query(obs_capture):
        async with AsyncTestClient(app=create_app()) as client:
            await client.get("/users/1")  # this route logs no GraphQueryMetric
        (record,) = obs_capture.records(GraphQueryMetric)
"""

ONE_EVENT_TEST = """
    import pytest


    @pytest.mark.asyncio
    async def test_a_failure_is_reported_once(obs_capture):
        async with AsyncTestClient(app=create_app()) as client:
            assert (await client.get("/boom")).status_code == 500
        assert len(obs_capture.sentry_events) == 1
"""


OWN_PROVIDER_TEST = """
    import pytest
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())  # the app set OpenTelemetry up itself; the plugin uses it


    @pytest.mark.asyncio
    async def test_request_span_is_captured(obs_capture):
        async with AsyncTestClient(app=create_app()) as client:
            await client.get("/users/1")
        assert [r.route for r in obs_capture.records(ApiLatencyMetric)] == ["/users/{user_id}"]
        assert [span.name for span in obs_capture.spans] == ["GET /users/{user_id}"]
"""


def run_user_tests(pytester: pytest.Pytester, test_source: str, *, own_process: bool = False) -> pytest.RunResult:
    """Run one user test file in a nested pytest, as ``pytest -p no:cacheprovider`` in their project.

    ``own_process``: in a fresh interpreter (for process-wide state such as OpenTelemetry's
    global provider, which can be set once per process).
    """
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=textwrap.dedent(USER_APP) + textwrap.dedent(test_source))
    # hypothesis' plugin (installed here, not ours) costs about a second per run; the rest load as usual.
    args = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    if own_process:
        return pytester.runpytest_subprocess(*args, timeout=90)
    return pytester.runpytest_inprocess(*args)


def assert_loaded_by_entry_point(result: pytest.RunResult) -> None:
    """pytest lists the distributions whose ``pytest11`` entry points it loaded."""
    result.stdout.fnmatch_lines(["plugins:*litestar-omnii-obs-*"])


@pytest.fixture
def user_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A nested pytest with plugin autoload on and no DSN or endpoint in its environment."""
    for name in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS", "SENTRY_DSN", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return pytester


def test_user_test_passes_when_its_assertions_hold(user_pytester: pytest.Pytester) -> None:
    result = run_user_tests(user_pytester, CORRECT_TEST)
    result.assert_outcomes(passed=1)
    assert_loaded_by_entry_point(result)


def test_user_test_fails_on_a_record_that_was_not_written(user_pytester: pytest.Pytester) -> None:
    result = run_user_tests(user_pytester, MISSING_RECORD_TEST)
    result.assert_outcomes(failed=1)
    assert_loaded_by_entry_point(result)
    result.stdout.fnmatch_lines(["*ValueError: not enough values to unpack (expected 1, got 0)"])


def test_user_test_fails_when_the_app_reports_an_error_twice(user_pytester: pytest.Pytester) -> None:
    result = run_user_tests(user_pytester, ONE_EVENT_TEST)
    result.assert_outcomes(failed=1)
    assert_loaded_by_entry_point(result)
    result.stdout.fnmatch_lines(["*assert 2 == 1*"])


def test_user_conftest_may_name_the_plugin_module_too(user_pytester: pytest.Pytester) -> None:
    # Naming the plugin explicitly, as many projects do for every pytest plugin they rely on.
    user_pytester.makeconftest('pytest_plugins = ["litestar_omnii_obs.testing"]')
    result = run_user_tests(user_pytester, CORRECT_TEST)
    # With the entry point named other than the module, pytest stops at start-up with
    # "ValueError: Plugin already registered under a different name".
    errors = [line for line in result.outlines + result.errlines if "Error" in line]
    assert result.ret == pytest.ExitCode.OK, errors
    result.assert_outcomes(passed=1)
    assert_loaded_by_entry_point(result)


def test_spans_are_captured_when_the_app_installed_its_own_tracer_provider(user_pytester: pytest.Pytester) -> None:
    # The plugin uses an application's own global TracerProvider by default (OMNII_OBS_USE_APP_PROVIDER).
    result = run_user_tests(user_pytester, OWN_PROVIDER_TEST, own_process=True)
    result.assert_outcomes(passed=1)
    assert_loaded_by_entry_point(result)
