"""Bad configuration: every variable the package reads, tried with empty, wrong-type, out-of-range and malformed
values, plus a property-based test over the whole environment.

The contract proven here: ``ObservabilityConfig.from_env`` either raises one ``ConfigError`` naming exactly the bad
variable, or returns a config where the documented default applies; and a config it accepted really starts (real
uvicorn, real OTLP receiver, real Sentry ingest) without a traceback from inside an SDK.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar import Litestar, get
from litestar.params import FromPath

from litestar_omnii_obs import ConfigError, ObservabilityConfig, ObservabilityPlugin, capture_error
from litestar_omnii_obs._internal.env import VARIABLES
from tests.conftest import free_port, read_lines, serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

ROOT = Path(__file__).resolve().parents[2]

ALL_VARS = tuple(var.name for var in VARIABLES)

#: Validated by the package but read again by the OpenTelemetry SDK from the process environment: an accepted value
#: is used by the SDK, so "the default applies" cannot be the outcome of a bad one; it must be a ConfigError.
SDK_READ = frozenset(
    {
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    }
)

LABELS = (
    "APP_ENV",
    "APP_VERSION",
    "SENTRY_ENVIRONMENT",
    "SENTRY_RELEASE",
    "OTEL_SERVICE_NAME",
    "OMNII_OBS_OPT_KEY",
    "OMNII_OBS_UNMATCHED_ROUTE",
)
BOOLS = (
    "OMNII_OBS_LATENCY",
    "OMNII_OBS_SENTRY_SEND_PII",
    "OMNII_OBS_TRACING",
    "OMNII_OBS_TRACES_CONSOLE",
    "OMNII_OBS_USE_APP_PROVIDER",
    "OMNII_OBS_LOG_ERRORS",
    "OMNII_OBS_FREEZE_GC",
    "OTEL_SDK_DISABLED",
)
FLOATS = (
    "SENTRY_TRACES_SAMPLE_RATE",
    "OTEL_TRACES_SAMPLER_ARG",
    "OMNII_OBS_METRICS_FLUSH_INTERVAL",
    "OMNII_OBS_SENTRY_FLUSH_TIMEOUT",
    "OMNII_OBS_SHUTDOWN_TIMEOUT",
    "OMNII_OBS_EXPORT_TIMEOUT",
    "OMNII_OBS_METRICS_SHUTDOWN_TIMEOUT",
    "OMNII_OBS_KEEP_SLOWER_THAN_MS",
)
POSITIVE_INTS = (
    "OMNII_OBS_METRICS_MAX_QUEUE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
)
URLS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")

BLANKS = (" ", "\t\n")
HUGE = "9" * 5000  # beyond int()'s default digit limit, and float() makes it inf

#: Per kind of variable: values that are wrong for it (wrong type, out of range, malformed).
BAD_BY_KIND: dict[tuple[str, ...], tuple[str, ...]] = {
    LABELS: ("a b", "x\n", "x\x00y", "x" * 201, "\u200b", "tab\there", "\u00a0"),
    BOOLS: ("maybe", "2", "-1", "truee", "y", "enabled", "nan", "1.0", HUGE),
    FLOATS: (
        "abc",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e999",
        "-1",
        "1e308",
        HUGE,
        "0x10",
        "1,5",
        "\u00bd",
        "\u0661e9",
    ),
    POSITIVE_INTS: ("abc", "0", "-1", "1.5", "1e3", HUGE, "nan", "0x10", "+-1", "\u00b2"),
    URLS: (
        "collector:4317",
        "http://",
        "http://:4317",
        "ftp://h:4317",
        "grpc://h:4317",
        "http://h:99999",
        "http://h:-1",
        "http://h:abc",
        "http://[::1",
        "http://[zz]:4317",
        "http://a\uff03b:4317",
    ),
    ("SENTRY_DSN",): (
        "not-a-dsn",
        "https://h/1",
        "https://k@h/",
        "https://k@h/abc",
        "ftp://k@h/1",
        "https://k@h:99999/1",
        "https://k@h/\u00b2",
        "https://k@[::1/1",
        "https://k@[zz]/1",
        "https://k@h\uff03x/1",
    ),
    ("OTEL_EXPORTER_OTLP_HEADERS",): ("no-equals", "=v", " = v", "a=b,novalue"),
    ("OTEL_TRACES_SAMPLER",): ("sometimes", "always-on", "always_on ", "parentbased_jaeger_remote", "0"),
    ("OMNII_OBS_EXCLUDE_PATHS",): ("health", "/a*b", "*", "/ok,relative", "/a,**"),
    ("OMNII_OBS_EXCLUDE_ROUTES",): ("health", "/a*", "*", "/ok,relative", "/users/*"),
    ("OMNII_OBS_LINE_ATTRIBUTES",): ("Not An Attr", "1abc", "a..b", "tenant;plan", "-", "route", "tenant,trace_id"),
    ("OMNII_OBS_KEEP_STATUSES",): ("700", "5xx", "nonee", "500-", "-", "599-500", HUGE),
    ("OMNII_OBS_FORWARDED_ALLOW_IPS",): ("not-an-ip", "10.0.0.0/33", "1.2.3", "::g", "10.0.0.1,,x", "**"),
    (
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    ): ("(", "x-[a", "*x", "a,(b"),
    ("OMNII_OBS_METRICS_SINK",): ("/no/such/dir/m.jsonl", "/tmp", "/"),
    ("OMNII_OBS_SENTRY_IGNORE_ERRORS",): ("Not An Error", "1abc", "a..b", "ValueError;KeyError", "-"),
    ("OMNII_OBS_SENTRY_CAPTURE_STATUS",): ("700", "599-500", "5xx", "-", "500-", "99", HUGE, "500,,502", "600"),
    ("OMNII_OBS_SENTRY_SCRUB_KEYS",): (",", " , "),
    ("OMNII_OBS_SENTRY_TRACES",): ("OTLP", "http", "on", "1", "otlp "),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"): (
        "http",
        "http/json",
        "GRPC",
        "grpc ",
        "h2",
    ),
    (
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    ): ("zstd", "gz", "deflate", "true", "gzip,none"),
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",): ("deltas", "cumulative,delta", "0", "low_memory"),
    ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",): (
        "exponential",
        "EXPLICIT_BUCKET_HISTOGRAM",
        "base2_exponential_bucket_histogram ",
    ),
    ("OTEL_RESOURCE_ATTRIBUTES",): ("novalue", "=v", "a=b,c", "k=\u00e9\u00e9"),
    ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"): (
        "zipkin",
        "jaeger",
        "otlp,none",
        "prometheus",
        "1",
    ),
}


def _cases() -> list[Any]:
    covered = {name for names in BAD_BY_KIND for name in names}
    assert covered == set(ALL_VARS), set(ALL_VARS) ^ covered
    cases: list[Any] = []
    for names, values in BAD_BY_KIND.items():
        for name in names:
            for value in (*BLANKS, *values):
                cases.append(pytest.param(name, value, id=f"{name}={value[:24]!r}"))
    return cases


def from_env_or_error(env: dict[str, str]) -> ObservabilityConfig | ConfigError:
    """The config, or the ConfigError; any other exception propagates (and fails the test)."""
    try:
        return ObservabilityConfig.from_env(env)
    except ConfigError as exc:
        return exc


def test_every_variable_read_is_in_the_table() -> None:
    """The table covers exactly what ``_EnvReader`` reads: set each variable to a sentinel and see it read."""
    read: list[str] = []

    class Spy(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.append(key)
            return super().get(key, default)

    ObservabilityConfig.from_env(Spy())
    assert sorted(set(read)) == sorted(ALL_VARS)


@pytest.mark.parametrize("name", ALL_VARS)
def test_empty_value_means_unset(name: str) -> None:
    assert ObservabilityConfig.from_env({name: ""}) == ObservabilityConfig()


@pytest.mark.parametrize(("name", "value"), _cases())
def test_bad_value_is_named_or_the_default_applies(name: str, value: str) -> None:
    config = from_env_or_error({name: value})
    if isinstance(config, ConfigError):
        assert [problem[0] for problem in config.problems] == [name]
        assert name in str(config)
        return
    assert name not in SDK_READ, f"{name}={value!r} was accepted, so the OpenTelemetry SDK will read it"
    assert config == ObservabilityConfig(), f"{name}={value!r} was accepted as a non-default value"


def test_a_bad_generic_endpoint_is_reported_even_when_the_traces_endpoint_is_set() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": "oops"}
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env(env)
    assert [problem[0] for problem in info.value.problems] == ["OTEL_EXPORTER_OTLP_ENDPOINT"]


# --------------------------------------------------------------------------- property-based

_TRICKY = st.sampled_from(
    [
        "",
        " ",
        "\t\n",
        "nan",
        "-nan",
        "inf",
        "-Infinity",
        "1e999",
        "-0",
        "0",
        "1",
        "0.5",
        "true",
        "off",
        HUGE,
        "9" * 40,
        "http://[::1",
        "http://[::1]:4317",
        "https://k@h/1",
        "https://k@[v1.x]/1",
        "/tmp/x.jsonl",
        "500-599",
        "a=b,c=d",
        "%zz=%ff",
        "\x00",
        "\udcff",
        "😀",
        "١٢٣",
    ]
)
_NUMBERS = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_URLISH = st.builds(
    "".join,
    st.lists(
        st.sampled_from(
            ["http://", "https://", "k@", "[", "]", "::1", "h", ":", "4317", "/", "42", "%", "\uff03", "@"]
        ),
        max_size=8,
    ),
)
_VALUES = st.one_of(_TRICKY, _NUMBERS, _URLISH, st.text(max_size=40), st.text(alphabet=" \t\r\n\x0b\x0c\xa0"))


@settings(max_examples=400, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(env=st.dictionaries(st.sampled_from(ALL_VARS), _VALUES))
@example(env={"SENTRY_DSN": "http://k@[::1/42"})
@example(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"})
@example(env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[zz]:4317", "APP_ENV": "a b"})
def test_from_env_only_ever_raises_config_error_naming_variables_that_are_set(env: dict[str, str]) -> None:
    config = from_env_or_error(env)
    if isinstance(config, ConfigError):
        names = [problem[0] for problem in config.problems]
        assert names, "a ConfigError with no problem"
        assert len(names) == len(set(names))
        for name in names:
            assert env.get(name, "") != "", f"{name} reported but not set"
            assert name in str(config)
        return
    assert isinstance(config, ObservabilityConfig)
    repr(config)  # printing an accepted config never fails
    assert 0.0 <= config.sentry_traces_sample_rate <= 1.0


# --------------------------------------------------------------------------- unknown names


def test_unknown_prefixed_names_are_warned_about_by_name(
    obs_log: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ObservabilityConfig.from_env(
        {"OMNII_OBS_EXCLUDE_PATH": "/x", "OMNII_OBS_SENTRY_DNS": "y", "OMNII_OBS_TRACING": "true"}
    )
    assert config.latency.exclude_paths == ("/health",)  # the typo is ignored, not half-applied
    [warning] = [r for r in obs_log if "unknown" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    unknown_part = warning.getMessage().split(";")[0]
    assert "OMNII_OBS_EXCLUDE_PATH" in unknown_part
    assert "OMNII_OBS_SENTRY_DNS" in unknown_part
    assert "OMNII_OBS_TRACING" not in unknown_part

    # The same through the real process environment.
    obs_log.clear()
    for name in [k for k in os.environ if k.startswith("OMNII_OBS_") or k in ALL_VARS]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OMNII_OBS_METRICS_SINKK", "stderr")
    ObservabilityConfig.from_env()
    assert [r.levelno for r in obs_log if "OMNII_OBS_METRICS_SINKK" in r.getMessage()] == [logging.WARNING]


# --------------------------------------------------------------------------- accepted configs really start


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    return {"id": user_id}


@get("/report")
async def report() -> dict[str, str | None]:
    return {"event_id": capture_error(LookupError("reported on purpose"), tags={"area": "startup-test"})}


def tail(text: str, lines: int = 12) -> str:
    """The end of a (long) stderr, where the exception is."""
    return "\n".join(text.strip().splitlines()[-lines:])


_SDK_FRAME = re.compile(r'File "[^"]*[/\\](sentry_sdk|opentelemetry|grpc)[/\\]')

#: Accepted-but-unusual environments; ``{otlp}`` and ``{dsn}`` are filled with the real peers' addresses.
UNUSUAL: dict[str, dict[str, str]] = {
    "sampler-always-off": {"OTEL_TRACES_SAMPLER": "always_off"},
    "sampler-ratio-half": {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
    "otlp-headers": {"OTEL_EXPORTER_OTLP_HEADERS": "a=b"},
    "sentry-dsn": {"SENTRY_DSN": "{dsn}", "SENTRY_TRACES_SAMPLE_RATE": "0"},
    "unicode-labels": {"APP_ENV": "prödüction-🚀", "OTEL_SERVICE_NAME": "s" * 200, "APP_VERSION": "\u0661.\u0660"},
    "bsp-queue-size-1": {"OTEL_BSP_MAX_QUEUE_SIZE": "1"},
    "bsp-batch-over-default-queue": {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"},
    "bsp-queue-size-huge": {"OTEL_BSP_MAX_QUEUE_SIZE": str(10**20)},
    "bsp-schedule-delay-huge": {"OTEL_BSP_SCHEDULE_DELAY": str(10**13)},
    "sentry-dsn-trailing-slash": {"SENTRY_DSN": "{dsn}/"},
    "otlp-header-name-with-space": {"OTEL_EXPORTER_OTLP_HEADERS": "x y=1"},
    "otlp-header-non-ascii-value": {"OTEL_EXPORTER_OTLP_HEADERS": "a=%C3%A9"},
    "otlp-header-uppercase-name": {"OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=acme"},
}


@pytest.mark.parametrize("case", list(UNUSUAL))
def test_an_accepted_config_really_starts(
    case: str, sink: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    with OtlpHttpReceiver() as receiver, SentryIngest() as ingest:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OMNII_OBS_METRICS_SINK": str(sink),
            "OMNII_OBS_SHUTDOWN_TIMEOUT": "3",
            "OMNII_OBS_SENTRY_FLUSH_TIMEOUT": "2",
            **{k: v.format(otlp=receiver.endpoint, dsn=ingest.dsn) for k, v in UNUSUAL[case].items()},
        }
        config = from_env_or_error(env)
        if isinstance(config, ConfigError):  # refusing at start-up, naming the variable, is the other good outcome
            assert {p[0] for p in config.problems} <= set(UNUSUAL[case]), config
            return
        # The SDKs read their own variables from the process environment: give them exactly this one.
        for name in list(os.environ):
            if name.startswith(("OTEL_", "SENTRY_", "OMNII_OBS_")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capfd.readouterr()
        thread_deaths: list[str] = []
        monkeypatch.setattr(
            threading, "excepthook", lambda a: thread_deaths.append(f"{a.thread}: {a.exc_type.__name__}: {a.exc_value}")
        )

        app = Litestar(route_handlers=[get_user, report], plugins=[ObservabilityPlugin(config)])
        try:
            with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
                response = client.get("/users/7")
                reported = client.get("/report").json()["event_id"] if config.sentry.dsn else None
        except RuntimeError as exc:
            pytest.fail(
                f"{case}: accepted by from_env but the app did not start ({exc}):\n{tail(capfd.readouterr().err)}"
            )
        err = capfd.readouterr().err
        spans = receiver.spans()
        sentry_events = ingest.events()
        metadata = [r.headers for r in receiver.requests()]

    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    sdk_frames = [line for line in err.splitlines() if _SDK_FRAME.search(line)]
    assert not sdk_frames, f"{case}: traceback from inside an SDK:\n{err}"
    assert not thread_deaths, f"{case}: an SDK thread died: {thread_deaths}"
    routes = [r["route"] for r in read_lines(sink) if r["metric"] == "api_latency"]
    assert routes == ["/users/{user_id}", "/report"] if config.sentry.dsn else ["/users/{user_id}"]
    user_spans = [s.trace_id for s in spans if s.name == "GET /users/{user_id}"]
    if case in ("sampler-always-off", "sentry-dsn"):  # a Sentry rate of 0 is also the default sampling ratio
        assert spans == []
    elif case == "sampler-ratio-half":
        assert user_spans in ([], [request_id])
    else:
        assert user_spans == [request_id], f"{case}: the request's span never reached the collector"
    if case == "otlp-headers":
        assert metadata, "nothing was exported"
        assert all(m.get("a") == "b" for m in metadata)
    if config.sentry.dsn:
        assert reported is not None
        assert [e["event_id"] for e in sentry_events] == [reported]


# --------------------------------------------------------------------------- example_app in a real process

EXAMPLE_BAD = [
    pytest.param({"OMNII_OBS_LATENCY": "maybe"}, "OMNII_OBS_LATENCY", id="bool"),
    pytest.param({"OTEL_BSP_MAX_QUEUE_SIZE": "-5"}, "OTEL_BSP_MAX_QUEUE_SIZE", id="bsp-negative"),
    pytest.param({"SENTRY_DSN": "http://publickey@[::1/42"}, "SENTRY_DSN", id="dsn-broken-ipv6"),
    pytest.param({"SENTRY_DSN": "http://publickey@127.0.0.1:9/42/"}, "SENTRY_DSN", id="dsn-trailing-slash"),
    pytest.param(
        {"OTEL_BSP_MAX_QUEUE_SIZE": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{port}"},
        "OTEL_BSP_MAX_QUEUE_SIZE",
        id="bsp-queue-below-batch",
    ),
]


@pytest.mark.parametrize(("bad", "name"), EXAMPLE_BAD)
def test_example_app_refuses_a_bad_variable_with_a_config_error(bad: dict[str, str], name: str) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        **{k: v.format(port=free_port()) for k, v in bad.items()},
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "example_app.app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        pytest.fail(f"example_app started and kept serving with {bad}:\n{tail(stderr)}")
    assert proc.returncode != 0
    assert "ConfigError" in stderr, tail(stderr)
    assert re.search(rf"^\s+{name}=", stderr, re.MULTILINE), tail(stderr)
    sdk_frames = [line for line in stderr.splitlines() if _SDK_FRAME.search(line)]
    assert not sdk_frames, tail(stderr)
