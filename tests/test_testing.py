"""The pytest plugin users get (``obs_capture``), used the way a user's own tests use it.

The fixture comes from the ``pytest11`` entry point (the package is installed), not from
``tests/conftest.py``. The first tests drive an app in-process with Litestar's
``AsyncTestClient`` (pytest-asyncio) and ``TestClient``; then the capture can't lie: an app
started by a fixture listed before ``obs_capture`` is captured, the shell's production
variables (a DSN and a collector that are real peers on 127.0.0.1 here) receive nothing, and
every span is recorded; the last ones run small user test files in a nested pytest run
(``pytester``, in-process; it loads its plugins through their entry points again) to show that
a wrong assertion on the capture fails the user's test and an app the capture cannot see
fails it loudly.
"""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
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
from tests.conftest import read_lines
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

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


# --------------------------------------------------------------------------- whatever the fixture order


@pytest.fixture
def factory_client() -> Iterator[TestClient[Litestar]]:
    """A user's client fixture: the app's lifespan starts when the fixture is set up."""
    with TestClient(app=create_app()) as started:
        yield started


@pytest_asyncio.fixture
async def async_factory_client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app()) as started:
        yield started


def test_an_app_started_by_a_fixture_listed_before_obs_capture_is_captured(
    factory_client: TestClient[Litestar], obs_capture: ObservabilityCapture
) -> None:
    assert factory_client.post("/graph/query").json() == {"rows": 3}
    assert factory_client.get("/boom").status_code == 500
    (record,) = obs_capture.records(GraphQueryMetric)
    assert record.result_count == 3
    assert [(r.route, r.status) for r in obs_capture.records(ApiLatencyMetric)] == [
        ("/graph/query", 200),
        ("/boom", 500),
    ]
    (event,) = obs_capture.sentry_events
    assert exception_types(event) == ["RuntimeError"]
    assert obs_capture.span("GET /boom").attributes["http.response.status_code"] == 500  # type: ignore[index]


@pytest.mark.asyncio
async def test_an_async_client_fixture_listed_first_is_captured_too(
    async_factory_client: AsyncTestClient[Litestar], obs_capture: ObservabilityCapture
) -> None:
    assert (await async_factory_client.get("/users/3")).status_code == 200
    assert [r.route for r in obs_capture.records(ApiLatencyMetric)] == ["/users/{user_id}"]
    assert [span.name for span in obs_capture.spans] == ["GET /users/{user_id}"]


# --------------------------------------------------------------------------- whatever the shell holds

SHELL_APP_REQUESTS = 20


@pytest.fixture
def shipped_file(tmp_path: Path) -> Path:
    """The metric file a production shell names, which a log shipper would tail."""
    return tmp_path / "metrics.jsonl"


@pytest.fixture
def production_shell(
    monkeypatch: pytest.MonkeyPatch, shipped_file: Path
) -> Iterator[tuple[SentryIngest, OtlpHttpReceiver]]:
    """The variables of a production shell, pointing at a real Sentry ingest and a real collector on 127.0.0.1."""
    with SentryIngest() as ingest, OtlpHttpReceiver() as collector:
        monkeypatch.setenv("APP_ENV", "production")
        monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "shell-service")
        monkeypatch.setenv("OMNII_OBS_METRICS_SINK", str(shipped_file))
        yield ingest, collector


def run_app_from_the_environment() -> None:
    """``ObservabilityPlugin()`` reads the shell; some requests, one failing, one ``capture_error``."""
    with TestClient(Litestar([get_user, graph_query, boom], plugins=[ObservabilityPlugin()])) as started:
        for user_id in range(SHELL_APP_REQUESTS):
            assert started.get(f"/users/{user_id}").status_code == 200
        assert started.post("/graph/query").status_code == 200
        assert started.get("/boom").status_code == 500


def test_without_obs_capture_these_variables_reach_the_peers(
    production_shell: tuple[SentryIngest, OtlpHttpReceiver], shipped_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test below: the same shell sends to both peers when nothing captures.
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", "1.0")
    ingest, collector = production_shell
    run_app_from_the_environment()
    assert exception_types(ingest.wait_for_events(1)[0]) == ["RuntimeError"]
    assert len(ingest.wait_for_otlp_spans(1)) >= 1
    assert len(collector.wait_for_spans(SHELL_APP_REQUESTS)) >= SHELL_APP_REQUESTS
    assert collector.wait_for_metric("http.server.request.duration")
    assert len(read_lines(shipped_file)) == SHELL_APP_REQUESTS + 4  # requests, graph query and its operation


def test_nothing_leaves_the_process_whatever_the_shell_holds(
    production_shell: tuple[SentryIngest, OtlpHttpReceiver],
    shipped_file: Path,
    obs_capture: ObservabilityCapture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest, collector = production_shell
    run_app_from_the_environment()  # returns after the app's shutdown flushed everything it would send
    assert ingest.requests_received == 0, ingest.describe()
    assert collector.requests_received == 0, collector.describe()
    assert not shipped_file.exists()  # the lines went to stdout, which pytest captured
    assert capsys.readouterr().out.count('"metric":"api_latency"') == SHELL_APP_REQUESTS + 2
    # ...while the capture saw all of it, with the shell's labels.
    (event,) = obs_capture.sentry_events
    assert exception_types(event) == ["RuntimeError"]
    assert event["environment"] == "production"
    assert len(obs_capture.records(ApiLatencyMetric)) == SHELL_APP_REQUESTS + 2
    assert len(obs_capture.records(GraphQueryMetric)) == 1


def test_every_span_is_recorded_in_a_production_shell(
    production_shell: tuple[SentryIngest, OtlpHttpReceiver], obs_capture: ObservabilityCapture
) -> None:
    # APP_ENV=production samples 10% of traces; all 22 by chance would be one in 10**22.
    run_app_from_the_environment()
    server_spans = [span for span in obs_capture.spans if span.name.startswith(("GET ", "POST "))]
    assert len(server_spans) == SHELL_APP_REQUESTS + 2
    assert obs_capture.span("graph_query").parent is not None  # the handler's timed_operation, nested


def test_every_span_is_recorded_even_when_the_shell_names_a_sampler(
    obs_capture: ObservabilityCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    run_app_from_the_environment()
    assert len([span for span in obs_capture.spans if span.name.startswith("GET /users")]) == SHELL_APP_REQUESTS


def test_a_spotlight_sidecar_named_by_the_shell_gets_nothing_either(
    obs_capture: ObservabilityCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SentryIngest() as sidecar:  # records every POST, whatever its path
        monkeypatch.setenv("SENTRY_SPOTLIGHT", f"{sidecar.url}/stream")
        run_app_from_the_environment()
        assert len(obs_capture.sentry_events) == 1
        assert sidecar.requests_received == 0, sidecar.describe()


@pytest.mark.obs_capture(sampling="app")
def test_a_test_can_ask_for_the_apps_own_sampler(
    obs_capture: ObservabilityCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    run_app_from_the_environment()
    assert obs_capture.sampling == "app"
    assert [span.name for span in obs_capture.spans if span.name.startswith("GET /users")] == []
    assert len(obs_capture.records(ApiLatencyMetric)) == SHELL_APP_REQUESTS + 2  # records do not depend on it


# --------------------------------------------------------------------------- the README's example, verbatim


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(app=app) as client:  # the app's lifespan starts here
        yield client


def test_graph_query_is_timed_and_failures_reach_sentry(
    client: TestClient[Litestar], obs_capture: ObservabilityCapture
) -> None:
    client.post("/graph/query", json={"query": "MATCH (n) RETURN n"})
    client.get("/boom")

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
        ApiLatencyMetric, GraphQueryMetric, ObservabilityPlugin, capture_error, log_metric,
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
        return Litestar([get_user, graph, boom], plugins=[ObservabilityPlugin()])
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


CLIENT_FIXTURE_FIRST_TEST = """
    import pytest
    import pytest_asyncio


    @pytest_asyncio.fixture
    async def client():
        async with AsyncTestClient(app=create_app()) as client:
            yield client


    @pytest.mark.asyncio
    async def test_users_route_is_traced(client, obs_capture):
        for user_id in range(20):
            await client.get(f"/users/{user_id}")
        assert len(obs_capture.records(ApiLatencyMetric)) == 20
        assert len(obs_capture.spans) == 20
"""

APP_STARTED_TOO_EARLY_TESTS = """
    import pytest
    from litestar.testing import TestClient


    @pytest.fixture(scope="module")
    def client():
        with TestClient(app=create_app()) as client:
            yield client


    def test_module_scoped_app(client, obs_capture):
        client.get("/users/1")


    @pytest.mark.obs_capture(sampling="sometimes")
    def test_bad_marker(obs_capture):
        pass
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


def test_a_users_client_fixture_listed_first_sees_every_span_in_a_production_shell(
    user_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SentryIngest() as ingest, OtlpHttpReceiver() as collector:
        monkeypatch.setenv("APP_ENV", "production")
        monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        result = run_user_tests(user_pytester, CLIENT_FIXTURE_FIRST_TEST)
        result.assert_outcomes(passed=1)
    assert (ingest.requests_received, collector.requests_received) == (0, 0)


def test_an_app_the_capture_cannot_see_fails_the_test_with_what_to_do(user_pytester: pytest.Pytester) -> None:
    result = run_user_tests(user_pytester, APP_STARTED_TOO_EARLY_TESTS)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*obs_capture: 1 app(s) with ObservabilityPlugin already running when the capture started*"
            "*Start the app after the capture: inside the test*or in a function-scoped fixture*",
            "*the marker takes only sampling='all' or 'app'*",
        ],
        consecutive=False,
    )
