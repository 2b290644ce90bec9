"""The benchmark variants: which app each one serves and the environment it is started with.

Pure data with no heavy imports, because ``bench.apps`` (imported by the measured server) reads it too.
Our plugin's variants are configured only through environment variables, read by
``ObservabilityConfig.from_env()`` exactly as a user's deployment would be.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BARE", "VARIANTS", "Endpoints", "Variant", "clean_environ", "select"]


@dataclass(frozen=True)
class Endpoints:
    """Where the variants send telemetry: live peers, addresses where nothing listens, a scratch directory."""

    otlp: str
    dsn: str
    dead_otlp: str
    dead_dsn: str
    workdir: Path


@dataclass(frozen=True)
class Variant:
    name: str
    app: str
    """The app ``bench.apps`` builds, a key of ``bench.apps.BUILDERS``."""
    what: str
    env: Callable[[Endpoints], dict[str, str]]
    uses_otlp: bool = False
    uses_sentry: bool = False


def _none(_: Endpoints) -> dict[str, str]:
    return {}


def _obs(**extra: str | Callable[[Endpoints], str]) -> Callable[[Endpoints], dict[str, str]]:
    """Our plugin: latency records to a file; ``extra`` values may depend on the endpoints."""

    def env(e: Endpoints) -> dict[str, str]:
        out = {"OTEL_SERVICE_NAME": "bench"}
        for key, value in extra.items():
            out[key] = value(e) if callable(value) else value
        return out

    return env


def _live_otlp(e: Endpoints) -> str:
    return e.otlp


def _dead_otlp(e: Endpoints) -> str:
    return e.dead_otlp


def _live_dsn(e: Endpoints) -> str:
    return e.dsn


def _dead_dsn(e: Endpoints) -> str:
    return e.dead_dsn


_RATIO = "parentbased_traceidratio"

BARE = "bare"

VARIANTS: tuple[Variant, ...] = (
    Variant(BARE, "bare", "Litestar alone", _none),
    Variant(
        "obs-latency",
        "obs",
        "plugin: latency records only (OMNII_OBS_TRACING=false, no Sentry)",
        _obs(OMNII_OBS_TRACING="false"),
    ),
    Variant(
        "obs-trace100",
        "obs",
        "plugin: latency + traces 100% to a live OTLP receiver",
        _obs(OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp, OTEL_TRACES_SAMPLER=_RATIO, OTEL_TRACES_SAMPLER_ARG="1.0"),
        uses_otlp=True,
    ),
    Variant(
        "obs-trace10",
        "obs",
        "plugin: latency + traces 10% to a live OTLP receiver",
        _obs(OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp, OTEL_TRACES_SAMPLER=_RATIO, OTEL_TRACES_SAMPLER_ARG="0.1"),
        uses_otlp=True,
    ),
    Variant(
        "obs-sentry",
        "obs",
        "plugin: latency + Sentry errors to a live ingest (tracing off, so no Sentry performance data)",
        _obs(OMNII_OBS_TRACING="false", SENTRY_DSN=_live_dsn, SENTRY_TRACES_SAMPLE_RATE="1.0"),
        uses_sentry=True,
    ),
    Variant(
        "obs-prod",
        "obs",
        "plugin, production default as issue 5 defines it: APP_ENV=production, latency records, traces 10% "
        "to a live collector, Sentry errors to a live ingest (SENTRY_TRACES_SAMPLE_RATE=0)",
        _obs(
            APP_ENV="production",
            OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp,
            OTEL_TRACES_SAMPLER=_RATIO,
            OTEL_TRACES_SAMPLER_ARG="0.1",
            SENTRY_DSN=_live_dsn,
            SENTRY_TRACES_SAMPLE_RATE="0",
        ),
        uses_otlp=True,
        uses_sentry=True,
    ),
    Variant(
        "obs-prod-sentry-perf",
        "obs",
        "obs-prod plus Sentry performance data at the seed's production rate (SENTRY_TRACES_SAMPLE_RATE=0.1)",
        _obs(
            APP_ENV="production",
            OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp,
            OTEL_TRACES_SAMPLER=_RATIO,
            OTEL_TRACES_SAMPLER_ARG="0.1",
            SENTRY_DSN=_live_dsn,
            SENTRY_TRACES_SAMPLE_RATE="0.1",
        ),
        uses_otlp=True,
        uses_sentry=True,
    ),
    Variant(
        "obs-all100",
        "obs",
        "plugin: latency records, traces 100% to a live collector, Sentry errors to a live ingest",
        _obs(
            OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp,
            OTEL_TRACES_SAMPLER=_RATIO,
            OTEL_TRACES_SAMPLER_ARG="1.0",
            SENTRY_DSN=_live_dsn,
            SENTRY_TRACES_SAMPLE_RATE="0",
        ),
        uses_otlp=True,
        uses_sentry=True,
    ),
    Variant(
        "obs-all100-dead",
        "obs",
        "obs-all100 with the collector and Sentry dead (nothing listens)",
        _obs(
            OTEL_EXPORTER_OTLP_ENDPOINT=_dead_otlp,
            OTEL_TRACES_SAMPLER=_RATIO,
            OTEL_TRACES_SAMPLER_ARG="1.0",
            SENTRY_DSN=_dead_dsn,
            SENTRY_TRACES_SAMPLE_RATE="0",
        ),
    ),
    Variant(
        "obs-all100-sentry-perf",
        "obs",
        "obs-all100 plus Sentry performance data for every request (SENTRY_TRACES_SAMPLE_RATE=1.0)",
        _obs(
            OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp,
            OTEL_TRACES_SAMPLER=_RATIO,
            OTEL_TRACES_SAMPLER_ARG="1.0",
            SENTRY_DSN=_live_dsn,
            SENTRY_TRACES_SAMPLE_RATE="1.0",
        ),
        uses_otlp=True,
        uses_sentry=True,
    ),
    Variant(
        "litestar-otel",
        "litestar-otel",
        "Litestar's OpenTelemetryPlugin, SDK TracerProvider, no exporter",
        _none,
    ),
    Variant(
        "litestar-otel-dead",
        "litestar-otel",
        "Litestar's OpenTelemetryPlugin, BatchSpanProcessor + OTLP/gRPC exporter to a dead collector",
        lambda e: {"OTEL_EXPORTER_OTLP_ENDPOINT": e.dead_otlp},
    ),
    Variant(
        "sentry-litestar",
        "sentry-litestar",
        "sentry-sdk LitestarIntegration, traces_sample_rate=1.0, live ingest",
        lambda e: {"SENTRY_DSN": e.dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0"},
        uses_sentry=True,
    ),
    Variant(
        "sentry-litestar-dead",
        "sentry-litestar",
        "sentry-sdk LitestarIntegration, traces_sample_rate=1.0, dead DSN",
        lambda e: {"SENTRY_DSN": e.dead_dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0"},
    ),
    Variant(
        "litestar-otel-sentry",
        "litestar-otel-sentry",
        "both: Litestar's OpenTelemetryPlugin (no exporter) + sentry-sdk LitestarIntegration at 1.0 to a live ingest",
        lambda e: {"SENTRY_DSN": e.dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0"},
        uses_sentry=True,
    ),
    Variant(
        "naive-logging",
        "naive-logging",
        "app-level before_request/after_response writing a JSON line through stdlib logging to a file",
        _none,
    ),
)

_BY_NAME = {v.name: v for v in VARIANTS}

# Inherited variables that would change what a variant measures.
_STRIPPED_PREFIXES = ("OTEL_", "SENTRY_", "OMNII_OBS_", "BENCH_")
_STRIPPED = frozenset({"APP_ENV", "APP_VERSION"})


def get(name: str) -> Variant:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(_BY_NAME)}") from None


def select(only: str | None) -> list[Variant]:
    """``BENCH_ONLY`` (comma-separated names) -> the variants to run, in table order, bare first."""
    if not only or not only.strip():
        return list(VARIANTS)
    wanted = {get(name.strip()).name for name in only.split(",") if name.strip()}
    return [v for v in VARIANTS if v.name == BARE or v.name in wanted]


def clean_environ(variant: Variant, endpoints: Endpoints, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a variant's process starts with: ours, minus anything inherited that would interfere."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(_STRIPPED_PREFIXES) and k not in _STRIPPED
    }
    env.update(
        BENCH_VARIANT=variant.name,
        # Both sinks are files in a scratch directory: a stdout pipe nobody reads would block the writer.
        OMNII_OBS_METRICS_SINK=str(endpoints.workdir / "metrics.jsonl"),
        BENCH_LOG_FILE=str(endpoints.workdir / "naive.jsonl"),
        PYTHONUNBUFFERED="1",
    )
    env.update(variant.env(endpoints))
    return env
