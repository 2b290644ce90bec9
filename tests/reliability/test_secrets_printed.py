"""Credentials in the configuration are never printed, whatever the output and whether the value is valid or not.

For every variable of :data:`litestar_omnii_obs._internal.env.VARIABLES` whose ``secret`` is ``url`` or ``value``
(new ones are picked up by the table), values carrying a distinct marker credential are fed in valid and invalid
forms, and every output a user sees is searched for the marker:

* ``str()``/``repr()`` of the :class:`ConfigError` an invalid value raises, and of the config a valid one builds;
* the log records (every logger, with tracebacks) and the process's own stdout/stderr while an app is built,
  started, serves requests and stops, in-process with Litestar's ``TestClient``, every endpoint pointing at a
  dead 127.0.0.1 port so that exporters and Sentry fail and log;
* ``litestar obs config`` (text and ``--json``), ``obs check`` and ``obs test-error``, run as real subprocesses
  against ``tests/reliability/secrets_app.py``; ``obs config`` must also say each value came from the environment.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from litestar_omnii_obs import ConfigError, ObservabilityConfig, ObservabilityPlugin
from litestar_omnii_obs._internal.env import VARIABLES, EnvVar
from litestar_omnii_obs.cli import config_rows
from tests.conftest import free_port
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.reliability.secrets_app:app"
#: Every credential below contains this; any occurrence of it in an output is a leak.
MARK = "hunter2"

SECRET_VARIABLES = [var for var in VARIABLES if var.secret in ("url", "value")]
PROTOCOLS = ("grpc", "http/protobuf")


def secret_of(var: EnvVar) -> str:
    """A credential unique to ``var`` (so a leak names its variable); letters, digits and dashes only."""
    return f"{MARK}-SECRET-{SECRET_VARIABLES.index(var):02d}-x"


def forms(var: EnvVar, host: str) -> list[str]:
    """Credential-bearing values for ``var``; some valid, some not (see :func:`split_forms`)."""
    secret = secret_of(var)
    if var.secret == "url":
        return [
            f"http://user:{secret}@{host}",
            f"https://{secret}@{host}/42",
            f"http://{secret}:{secret}@{host}/1",
            f"grpc://user:{secret}@{host}",
            f"grpc://{secret}@{host}/1",
            f"http://user:{secret}@collector:notaport",
            f"http://user:{secret}@[::1",
            f"user:{secret}@collector:4317",
            f"http://user:{secret}@",
            f"https://{secret}@collector/not-a-project",
            f"http://user:pass/{secret}@collector:4317",
            f"http://user:{secret}@collector:4317/ with space",
        ]
    return [
        f"api-key={secret}",
        f"authorization=Bearer {secret},x-tenant=t-1",
        f"api-key={secret}\x01",
        f"Bad Name={secret}",
        secret,
        f"api-key={secret}\u00e9",
        f"x-tenant=t-1,api-key={secret},=no-name",
    ]


def split_forms(var: EnvVar, host: str) -> tuple[list[str], list[tuple[str, ConfigError]]]:
    """``forms`` as ``from_env`` judges them: (valid values, (invalid value, its ConfigError))."""
    valid: list[str] = []
    invalid: list[tuple[str, ConfigError]] = []
    for value in forms(var, host):
        try:
            ObservabilityConfig.from_env({var.name: value})
        except ConfigError as exc:
            invalid.append((value, exc))
        else:
            valid.append(value)
    assert valid, f"no valid credential-bearing form for {var.name}"
    assert invalid, f"no invalid credential-bearing form for {var.name}"
    return valid, invalid


def leaks(text: str) -> list[str]:
    """Each place ``text`` shows a credential, with what comes before it."""
    return [text[max(0, m.start() - 80) : m.end() + 20] for m in re.finditer(re.escape(MARK), text)]


def dead_host() -> str:
    return f"127.0.0.1:{free_port()}"  # bound, then closed: nothing listens there


VARIABLE_IDS = [var.name for var in SECRET_VARIABLES]


def test_the_table_has_secret_variables() -> None:
    names = {var.name for var in SECRET_VARIABLES}
    assert {"SENTRY_DSN", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS"} <= names
    assert len({secret_of(var) for var in SECRET_VARIABLES}) == len(SECRET_VARIABLES)


# --------------------------------------------------------------------------- ConfigError, repr() and str()


@pytest.mark.parametrize("var", SECRET_VARIABLES, ids=VARIABLE_IDS)
def test_config_error_names_the_variable_and_never_shows_the_credential(var: EnvVar) -> None:
    _, invalid = split_forms(var, "collector:4317")
    for value, exc in invalid:
        outputs = [str(exc), repr(exc), repr(exc.args), repr(exc.problems), "".join(traceback.format_exception(exc))]
        assert var.name in str(exc), (value, str(exc))
        assert [leaks(text) for text in outputs if leaks(text)] == [], repr(value)
    # Next to other invalid variables too (the error lists them all).
    value = invalid[0][0]
    with pytest.raises(ConfigError) as caught:
        ObservabilityConfig.from_env({var.name: value, "OTEL_BSP_SCHEDULE_DELAY": "soon", "APP_ENV": " "})
    assert {name for name, _, _ in caught.value.problems} == {var.name, "OTEL_BSP_SCHEDULE_DELAY", "APP_ENV"}
    assert leaks(str(caught.value)) == []


@pytest.mark.parametrize("var", SECRET_VARIABLES, ids=VARIABLE_IDS)
def test_a_valid_config_never_shows_the_credential(var: EnvVar) -> None:
    valid, _ = split_forms(var, "collector:4317")
    for value in valid:
        environ = {var.name: value}
        config = ObservabilityConfig.from_env(environ)
        section = getattr(config, var.field.split(".")[0])
        rows = {row.name: row for row in config_rows(config, environ)}
        outputs = [repr(config), str(config), f"{config}", repr(section), str(section), repr(list(rows.values()))]
        assert [leaks(text) for text in outputs if leaks(text)] == [], repr(value)
        # The value is still shown, hidden part and all, and said to come from the environment.
        row = rows[var.field]
        assert (row.source, row.variable) == ("environment", var.name)
        assert "***" in row.value
        if var.secret == "url":
            assert "collector" in row.value
            assert "collector" in repr(section)


# --------------------------------------------------------------------------- logs of a running app


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@get("/ok")
async def ok() -> str:
    return "ok"


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        """Each record formatted with its traceback, plus its raw arguments."""
        return [f"{self.format(r)} {r.args!r}" for r in self.records]


@pytest.fixture
def all_logs() -> Iterator[_Everything]:
    """Records of every logger (root and the package's, in case it stops propagating), at every level."""
    handler = _Everything()
    root, package = logging.getLogger(), logging.getLogger("litestar_omnii_obs")
    level = root.level
    root.addHandler(handler)
    package.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        package.removeHandler(handler)
        root.setLevel(level)


def fast_failing(host: str, sink: Path) -> dict[str, str]:
    """Short bounds so that a dead peer fails (and is logged) quickly; every trace sampled."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host}",
        "OMNII_OBS_METRICS_SINK": str(sink),
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OMNII_OBS_EXPORT_TIMEOUT": "0.5",
        "OMNII_OBS_SHUTDOWN_TIMEOUT": "2",
        "OMNII_OBS_SENTRY_FLUSH_TIMEOUT": "1",
    }


def serve_a_little(config: ObservabilityConfig) -> list[int]:
    app = Litestar(route_handlers=[boom, ok], plugins=[ObservabilityPlugin(config)])
    with TestClient(app) as client:
        return [client.get(path).status_code for path in ("/ok", "/boom", "/ok", "/boom")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("var", SECRET_VARIABLES, ids=VARIABLE_IDS)
def test_a_running_app_never_logs_the_credential(
    var: EnvVar, protocol: str, all_logs: _Everything, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    host = dead_host()
    value = split_forms(var, host)[0][0]
    environ = {**fast_failing(host, tmp_path / "m.jsonl"), "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, var.name: value}
    statuses = serve_a_little(ObservabilityConfig.from_env(environ))
    out, err = capfd.readouterr()

    assert statuses == [200, 500, 200, 500]
    texts = all_logs.texts()
    # The dead peer was reported, so there was something to search.
    assert any(host in text and ("failing" in text or "failed" in text) for text in texts), texts
    if var.secret == "url":
        assert any(f"***@{host}" in text for text in texts), texts  # the endpoint shown, its credential hidden
    assert [leaks(text) for text in [*texts, out, err] if leaks(text)] == []


def code_config(var: EnvVar, value: Any, host: str, sink: Path) -> ObservabilityConfig:
    """``fast_failing``'s config with ``var``'s field set in code to ``value`` (no validation on this path)."""
    data = msgspec.to_builtins(ObservabilityConfig.from_env(fast_failing(host, sink)))
    section, _, name = var.field.rpartition(".")
    data[section][name] = value
    return msgspec.convert(data, ObservabilityConfig)


def invalid_code_values(var: EnvVar, host: str) -> list[Any]:
    secret = secret_of(var)
    if var.secret == "url":
        return [f"grpc://user:{secret}@{host}/1", f"http://user:{secret}@[::1", f"https://{secret}@{host}/no-project"]
    return [[["api-key", f"{secret}\n"]], [["Bad Name", secret]], [["api-key", f"{secret}\u00e9"]]]


@pytest.mark.parametrize("var", SECRET_VARIABLES, ids=VARIABLE_IDS)
def test_an_app_given_an_invalid_credential_in_code_never_shows_it(
    var: EnvVar, all_logs: _Everything, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    host = dead_host()
    for value in invalid_code_values(var, host):
        outputs: list[str] = []
        try:
            config = code_config(var, value, host, tmp_path / "m.jsonl")
            outputs += [repr(config), str(config)]
            serve_a_little(config)
        except Exception as exc:  # refusing the value is fine; printing it is not
            outputs.append("".join(traceback.format_exception(exc)))
        out, err = capfd.readouterr()
        outputs += [*all_logs.texts(), out, err]
        all_logs.records.clear()
        assert [leaks(text) for text in outputs if leaks(text)] == [], repr(value)


# --------------------------------------------------------------------------- litestar obs, as a subprocess


def obs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``litestar --app tests.reliability.secrets_app:app obs ARGS`` in a fresh process with only ``env`` set."""
    return subprocess.run(
        [sys.executable, "-m", "litestar", "--app", APP, "obs", *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def printed(result: subprocess.CompletedProcess[str]) -> list[str]:
    return leaks(result.stdout + result.stderr)


def row(output: str, first_column: str) -> list[str]:
    """The cells of the text-table line that starts with ``first_column``."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == first_column:
            return cells
    raise AssertionError(f"no row {first_column!r} in:\n{output}")


@pytest.mark.parametrize("var", SECRET_VARIABLES, ids=VARIABLE_IDS)
def test_obs_config_hides_the_credential_and_says_it_came_from_the_environment(var: EnvVar) -> None:
    valid, _ = split_forms(var, "collector:4317")
    env = {var.name: valid[0]}
    text, as_json = obs("config", env=env), obs("config", "--json", env=env)
    for result in (text, as_json):
        assert result.returncode == 0, result.stderr
        assert printed(result) == []

    [entry] = [r for r in json.loads(as_json.stdout)["config"] if r["name"] == var.field]
    assert (entry["source"], entry["variable"]) == ("environment", var.name)
    assert "***" in entry["value"]
    assert row(text.stdout, var.field) == [var.field, entry["value"], "environment", var.name]


@pytest.mark.parametrize("var", SECRET_VARIABLES, ids=VARIABLE_IDS)
def test_obs_config_with_an_invalid_credential_exits_2_without_showing_it(var: EnvVar) -> None:
    _, invalid = split_forms(var, "collector:4317")
    for args in (("config",), ("config", "--json")):
        result = obs(*args, env={var.name: invalid[0][0]})
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert var.name in result.stderr
        assert printed(result) == []


def every_secret_variable(host: str) -> dict[str, str]:
    """Each secret variable set to a valid credential-bearing value pointing at ``host``."""
    return {var.name: split_forms(var, host)[0][0] for var in SECRET_VARIABLES}


def test_obs_config_labels_every_secret_value_set_together_as_from_the_environment() -> None:
    env = every_secret_variable("collector:4317")
    result = obs("config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert printed(result) == []
    rows = {r["name"]: r for r in json.loads(result.stdout)["config"]}
    for var in SECRET_VARIABLES:
        assert (rows[var.field]["source"], rows[var.field]["variable"]) == ("environment", var.name)


def test_obs_config_hides_credentials_set_in_code() -> None:
    code: dict[str, Any] = {
        # A URL as is; name=value pairs as the field holds them.
        var.field: split_forms(var, "collector:4317")[0][0] if var.secret == "url" else [["api-key", secret_of(var)]]
        for var in SECRET_VARIABLES
    }
    for args in (("config",), ("config", "--json")):
        result = obs(*args, env={"SECRETS_APP_CODE_VALUES": json.dumps(code)})
        assert result.returncode == 0, result.stderr
        assert printed(result) == []
    rows = {r["name"]: r for r in json.loads(result.stdout)["config"]}
    for var in SECRET_VARIABLES:
        assert rows[var.field]["source"] == "code"
        assert "***" in rows[var.field]["value"]


def test_obs_check_and_test_error_against_dead_peers_never_show_credentials() -> None:
    host = dead_host()
    env = every_secret_variable(host)
    for protocol in PROTOCOLS:
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
        as_json = obs("check", "--json", "--timeout", "1", env=env)
        text = obs("check", "--timeout", "1", env=env)
        for result in (as_json, text):
            assert result.returncode == 1, (result.stdout, result.stderr)  # every pipe failed: dead peers
            assert printed(result) == []
        pipes = {p["pipe"]: p for p in json.loads(as_json.stdout)["pipes"]}
        assert {p["result"] for p in pipes.values()} == {"failed"}
        assert all(f"***@{host}" in p["target"] for p in pipes.values()), pipes
    result = obs("test-error", "--timeout", "1", env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "event id:" in result.stdout
    assert printed(result) == []


def test_obs_check_and_test_error_against_live_peers_never_show_credentials() -> None:
    dsn_var = next(var for var in SECRET_VARIABLES if var.field == "sentry.dsn")
    with SentryIngest(public_key=secret_of(dsn_var)) as ingest, OtlpHttpReceiver() as receiver:
        env = {
            "SENTRY_DSN": ingest.dsn,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint.replace("http://", f"http://user:{MARK}-SECRET-otlp@"),
            "OTEL_EXPORTER_OTLP_HEADERS": f"api-key={MARK}-SECRET-header",
        }
        check = obs("check", env=env)
        test_error = obs("test-error", "--timeout", "5", env=env)
        events = ingest.events()
    assert check.returncode == 0, check.stdout + check.stderr  # every pipe answered, so every success line printed
    assert test_error.returncode == 0, (test_error.stdout, test_error.stderr)
    assert f"sent to http://***@127.0.0.1:{ingest.port}/42" in test_error.stdout
    assert len(events) == 2
    assert receiver.spans()
    assert printed(check) == []
    assert printed(test_error) == []
