#!/usr/bin/env bash
# The benchmark (issue 5): `make bench` or `bash bench/run.sh`.
#
# Installs what it needs (wrk from Debian; the OpenTelemetry ASGI instrumentation that Litestar's own
# OpenTelemetryPlugin imports, into .venv), then runs bench/driver.py: wrk against uvicorn for every variant,
# interleaved with bare Litestar, and the in-process per-feature table (bench/inprocess.py). Prints markdown
# and writes it to bench/results/latest.md. Everything listens on 127.0.0.1 only.
#
# Knobs (environment):
#   BENCH_DURATION=10        seconds of wrk load per run
#   BENCH_ROUNDS=2           rounds; each runs bare, X, bare, Y, ... for every variant
#   BENCH_WARMUP=1           seconds of wrk load before each measured run (not counted)
#   BENCH_ONLY=a,b           only these variants (bare is always run); names: bash bench/run.sh --list
#   BENCH_SKIP_HTTP=1        skip the wrk table
#   BENCH_SKIP_INPROCESS=1   skip the in-process table
#   BENCH_INPROC_REQUESTS=20000, BENCH_INPROC_REPEATS=5   in-process requests per variant, split into repeats
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "bench: $PY not found; run 'make bench' (it creates .venv first)" >&2
    exit 1
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y -q wrk >/dev/null 2>&1; then
        as_root apt-get update -q >/dev/null
        as_root apt-get install -y -q wrk >/dev/null
    fi
fi

# Litestar's OpenTelemetryPlugin needs opentelemetry-instrumentation-asgi, released in step with the
# semantic-conventions package the SDK already pulled in; pin to that version so nothing else moves.
if ! "$PY" -c 'import opentelemetry.instrumentation.asgi' >/dev/null 2>&1; then
    semconv=$("$PY" -c 'import importlib.metadata as m; print(m.version("opentelemetry-semantic-conventions"))')
    echo "bench: installing opentelemetry-instrumentation-asgi==$semconv into .venv" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -c requirements.lock \
        "opentelemetry-instrumentation-asgi==$semconv"
fi

exec "$PY" -m bench.driver "$@"
