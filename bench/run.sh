#!/usr/bin/env bash
# The benchmark (issues 5 and 11): `make bench` or `bash bench/run.sh`.
#
# Installs what it needs (wrk from Debian's packages; bench/requirements.txt into .venv: uvloop, httptools,
# granian, the anchors' libraries), then runs bench/driver.py: the in-process per-feature table, then wrk
# against uvicorn (uvloop + httptools) and granian for every variant, each interleaved with bare Litestar,
# then the cold-start table and the fixed-rate tail-latency table (uvicorn).
# Prints markdown and writes it to bench/results/latest.md. Everything listens on 127.0.0.1 only.
#
# Knobs (environment):
#   BENCH_DURATION=6         seconds of wrk load per run
#   BENCH_ROUNDS=3           rounds; each runs bare, X, bare, Y, ... for every variant (the median is kept)
#   BENCH_WARMUP=1           seconds of wrk load before each measured run (not counted)
#   BENCH_ONLY=a,b           only these variants (bare is always run); names: bash bench/run.sh --list
#   BENCH_SERVERS=uvicorn,granian   servers, in order (the first is the primary); uvicorn-h11 is the extra
#   BENCH_SKIP_HTTP=1        skip the wrk tables
#   BENCH_SKIP_INPROCESS=1   skip the in-process table
#   BENCH_INPROC_REQUESTS=20000, BENCH_INPROC_REPEATS=5   in-process requests per variant, split into repeats
#   BENCH_SKIP_COLD=1        skip the cold-start table; BENCH_COLD_ROUNDS=7 fresh processes per variant
#   BENCH_SKIP_TAIL=1        skip the fixed-rate tail-latency table; BENCH_TAIL_RATE (req/s, default a third
#                            of bare's saturation), BENCH_TAIL_DURATION=6 (s per run), BENCH_TAIL_ROUNDS=1
#   BENCH_QUICK=1            a smoke run of every table, each cut short (a few minutes in all)
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

if [[ " $* " != *" --list "* ]] && ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y -q wrk >/dev/null 2>&1; then
        as_root apt-get update -q >/dev/null
        as_root apt-get install -y -q wrk >/dev/null
    fi
fi

# Pinned, and constrained by requirements.lock so nothing the package uses moves; quick once installed.
"$PY" -m pip install --quiet --disable-pip-version-check -c requirements.lock -r bench/requirements.txt

exec "$PY" -m bench.driver "$@"
