"""An app loads only the dependencies its configuration uses (issue 22: cold start).

Every new worker pays for what it imports: gRPC, protobuf and the SDK's metrics cost tens of
milliseconds and megabytes of memory before the first request. Each case runs in a fresh
interpreter (a module, once imported, stays imported): import the package, build an app with
``ObservabilityPlugin()`` reading the environment, start it, answer one request, stop it, then
report which of the optional dependencies were loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping

from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.otlp_receiver import OtlpReceiver

_APP = """
import json, sys
from litestar import Litestar, get
from litestar.testing import TestClient
from litestar_omnii_obs import ObservabilityPlugin

@get("/ping")
async def ping() -> str:
    return "pong"

app = Litestar([ping], plugins=[ObservabilityPlugin()])
with TestClient(app) as client:
    assert client.get("/ping").text == "pong"
print("MODULES " + json.dumps(sorted(sys.modules)))
"""

#: What an app that exports nothing has no use for.
EXPORT_ONLY = (
    "grpc",
    "google.protobuf",
    "opentelemetry.proto",
    "opentelemetry.exporter",
    "opentelemetry.sdk.metrics",
    "litestar_omnii_obs._internal.otlp",
)
_OURS = ("OTEL_", "SENTRY_", "OMNII_OBS_")


def _modules_after_one_request(variables: Mapping[str, str]) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS) and k != "APP_ENV"}
    env.update(variables)
    done = subprocess.run(
        [sys.executable, "-c", _APP], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def _loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if any(m == p or m.startswith(p + ".") for m in modules))


def test_without_peers_no_exporter_is_imported() -> None:
    modules = _modules_after_one_request({})
    assert "litestar_omnii_obs" in modules
    assert _loaded(modules, EXPORT_ONLY) == []


def test_tracing_off_loads_no_exporter_either() -> None:
    modules = _modules_after_one_request({"OMNII_OBS_TRACING": "false"})
    assert _loaded(modules, EXPORT_ONLY) == []


def test_an_otlp_endpoint_over_the_default_protocol_loads_neither_grpc_nor_protobuf() -> None:
    """The other side of the same check: with a collector configured, only what it needs is there."""
    with OtlpHttpReceiver() as receiver:
        modules = _modules_after_one_request({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        assert receiver.wait_for_spans(1)
    assert _loaded(modules, EXPORT_ONLY) == ["litestar_omnii_obs._internal.otlp", "opentelemetry.sdk.metrics"]


def test_the_grpc_protocol_loads_grpc_and_still_no_protobuf() -> None:
    with OtlpReceiver() as receiver:
        modules = _modules_after_one_request(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )
        assert receiver.wait_for_spans(1)
    assert _loaded(modules, EXPORT_ONLY) == ["grpc", "litestar_omnii_obs._internal.otlp", "opentelemetry.sdk.metrics"]


def test_traces_only_loads_no_metrics_sdk() -> None:
    with OtlpHttpReceiver() as receiver:
        modules = _modules_after_one_request(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRICS_EXPORTER": "none"}
        )
    assert _loaded(modules, EXPORT_ONLY) == ["litestar_omnii_obs._internal.otlp"]


def test_without_a_dsn_sentry_sdk_is_not_imported() -> None:
    modules = _modules_after_one_request({})
    assert _loaded(modules, ("sentry_sdk",)) == []
