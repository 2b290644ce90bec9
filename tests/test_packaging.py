"""The package as a user gets it: a wheel built from this checkout, installed into a fresh venv, runs an app.

What an editable install in ``.venv`` cannot show: that the wheel holds every module (the
``_internal`` package included), ``py.typed`` and the ``pytest11`` entry point, that its declared
dependencies are enough to run (the venv has nothing else, installed with ``-c requirements.lock``
as ``make`` does), and that ``import litestar_omnii_obs`` there is the installed copy, not this
source tree. Slow (a build and an install; pip's cache helps), so it is marked ``reliability``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.peers.otlp_http_receiver import OtlpHttpReceiver

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "litestar_omnii_obs"

TINY_APP = """
    import litestar_omnii_obs
    from litestar import Litestar, get
    from litestar.params import FromPath
    from litestar.testing import TestClient

    from litestar_omnii_obs import ObservabilityPlugin


    @get("/users/{user_id:int}")
    async def get_user(user_id: FromPath[int]) -> dict[str, int]:
        return {"id": user_id}


    app = Litestar([get_user], plugins=[ObservabilityPlugin()])

    if __name__ == "__main__":
        with TestClient(app) as client:
            assert client.get("/users/7").json() == {"id": 7}
        print(litestar_omnii_obs.__file__, flush=True)
"""


def run(*args: str | Path, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or the test fails with everything it printed."""
    done = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_environment() -> dict[str, str]:
    """What a fresh shell has: no ``SENTRY_DSN``, no ``OTEL_*``, no ``PYTHONPATH`` pointing at this checkout."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", out, cwd=ROOT, timeout=300)
    (built,) = out.glob("litestar_omnii_obs-*.whl")
    return built


def test_the_wheel_holds_every_module_the_type_marker_and_the_pytest_plugin(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    assert "litestar_omnii_obs/_internal/plugin.py" in sources
    assert sources - names == set()
    assert "litestar_omnii_obs/py.typed" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]" in text
    assert "litestar_omnii_obs.testing = litestar_omnii_obs.testing" in text


def test_the_wheel_installs_into_a_fresh_venv_and_an_app_writes_its_latency_line(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, timeout=120)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "requirements.lock", wheel, cwd=tmp_path, timeout=480)
    (tmp_path / "tiny_app.py").write_text(textwrap.dedent(TINY_APP))

    out = run(python, "tiny_app.py", cwd=tmp_path, env=clean_environment(), timeout=60)
    *lines, module_file = out.splitlines()
    assert Path(module_file).is_relative_to(venv), module_file  # the installed copy, not this checkout
    (line,) = [json.loads(text) for text in lines if text.startswith("{")]
    assert {key: line[key] for key in ("metric", "route", "method", "status")} == {
        "metric": "api_latency",
        "route": "/users/{user_id}",
        "method": "GET",
        "status": 200,
    }
    assert isinstance(line["duration"], float)
    assert len(line["trace_id"]) == 32

    # The Litestar CLI finds the plugin's `obs` group in the installed package.
    shown = json.loads(
        run(
            venv / "bin" / "litestar",
            "--app",
            "tiny_app:app",
            "obs",
            "config",
            "--json",
            cwd=tmp_path,
            env=clean_environment(),
            timeout=60,
        )
    )
    settings = {item["name"]: item for item in shown["config"]}
    assert settings["metrics.sink"]["source"] == "default"

    # Installed without extras: no gRPC and no protobuf, yet spans and metrics reach a collector over
    # http/protobuf (the default), and asking for gRPC stops the start-up naming the variable and the extra.
    found = run(
        python,
        "-c",
        "import importlib.util as u; print([m for m in ('grpc', 'google') if u.find_spec(m)])",
        cwd=tmp_path,
        env=clean_environment(),
        timeout=60,
    )
    assert found.strip() == "[]"
    with OtlpHttpReceiver() as collector:
        env = clean_environment() | {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}
        run(python, "tiny_app.py", cwd=tmp_path, env=env, timeout=60)
        [span] = collector.wait_for_spans(1)
        assert collector.wait_for_metric("http.server.request.duration")
    assert span.name == "GET /users/{user_id}"
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
    failed = subprocess.run(
        [str(python), "tiny_app.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert failed.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in failed.stderr
    assert "litestar-omnii-obs[grpc]" in failed.stderr, failed.stderr[-2000:]
