"""The benchmark variants: which app each one serves, the environment it starts with, and its targets.

Pure data with no heavy imports, because ``bench.apps`` (imported by the measured server) reads it too.
Our plugin's variants are configured only through environment variables, read by
``ObservabilityConfig.from_env()`` exactly as a user's deployment would be: nothing else is set for them
(no service name, no metrics sink: metric lines go to stdout, which the benchmark sends to a file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BARE", "FEATURES", "VARIANTS", "Endpoints", "Variant", "clean_environ", "get", "select"]


@dataclass(frozen=True)
class Endpoints:
    """Where the variants send telemetry: live peers, addresses where nothing listens, a scratch directory."""

    otlp: str
    """The OTLP/HTTP collector (the default protocol)."""
    otlp_grpc: str
    """The OTLP/gRPC collector (the anchors' exporters, and ``obs-prod-grpc``)."""
    dsn: str
    dead_otlp: str
    dead_dsn: str
    workdir: Path


Env = Callable[[Endpoints], dict[str, str]]
_Value = str | Callable[[Endpoints], str]

#: The columns of the "how it compares" table, in order.
FEATURES = ("latency records", "traces", "Sentry errors", "Sentry perf", "metrics")


@dataclass(frozen=True)
class Variant:
    name: str
    app: str
    """The app ``bench.apps`` builds, a key of ``bench.apps.BUILDERS``."""
    what: str
    env: Env
    uses_otlp: bool = False
    uses_sentry: bool = False
    target_us: float | None = None
    """In-process target: at most this many µs of CPU per request over bare."""
    target_share: float | None = None
    """Over HTTP on the primary server: at least this share of bare's throughput."""
    target_cold: tuple[float, float] | None = None
    """Cold start (whole process, over bare): at most this many ms and MiB of peak RSS."""
    target_p99: float | None = None
    """Fixed-rate tail latency on the primary server: p99 at most this many times bare's p99."""
    live: str | None = None
    """For a dead-peer variant: the same configuration with live peers (p50/p99 within 10% of it)."""
    features: frozenset[str] = frozenset()
    """For the comparison table: which of :data:`FEATURES` this variant is configured to give."""


def _env(**values: _Value) -> Env:
    """Fixed variables; a callable value depends on the endpoints (live or dead peers)."""

    def env(e: Endpoints) -> dict[str, str]:
        return {key: value(e) if callable(value) else value for key, value in values.items()}

    return env


def _live_otlp(e: Endpoints) -> str:
    return e.otlp


def _live_otlp_grpc(e: Endpoints) -> str:
    return e.otlp_grpc


def _dead_otlp(e: Endpoints) -> str:
    return e.dead_otlp


def _live_dsn(e: Endpoints) -> str:
    return e.dsn


def _dead_dsn(e: Endpoints) -> str:
    return e.dead_dsn


BARE = "bare"

_PROD: dict[str, _Value] = {"APP_ENV": "production"}
_ALL100: dict[str, _Value] = {
    "APP_ENV": "production",
    "OTEL_EXPORTER_OTLP_ENDPOINT": _live_otlp,
    "SENTRY_DSN": _live_dsn,
    "SENTRY_TRACES_SAMPLE_RATE": "1.0",
}
_OURS = frozenset({"latency records", "traces", "Sentry errors", "metrics"})

VARIANTS: tuple[Variant, ...] = (
    Variant(BARE, "bare", "Litestar alone", _env()),
    Variant(
        "bare-hooks",
        "bare-hooks",
        "floor: Litestar with the plugin's three hook points, each empty (a route middleware wrapping send, "
        "app-level before_send and after_exception): what Litestar itself spends on any per-route observer",
        _env(),
    ),
    # ---------------------------------------------------------------- ours, configured by environment only
    Variant(
        "obs-latency",
        "obs",
        "plugin, latency records only: OMNII_OBS_TRACING=false, no SENTRY_DSN",
        _env(OMNII_OBS_TRACING="false"),
        target_us=5,
        target_share=0.92,  # issue 22's restated HTTP share targets (0.92, 0.80, 0.65)
        features=frozenset({"latency records"}),
    ),
    Variant(
        "obs-default",
        "obs",
        "plugin, default config with no peers (what `make run` does: no variable set at all)",
        _env(),
        target_us=8,
        target_cold=(60, 8),
        features=frozenset({"latency records"}),
    ),
    Variant(
        "obs-prod",
        "obs",
        "plugin, production default as shipped: APP_ENV=production, SENTRY_DSN and OTEL_EXPORTER_OTLP_ENDPOINT "
        "(live peers), nothing else",
        _env(**_PROD, OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp, SENTRY_DSN=_live_dsn),
        uses_otlp=True,
        uses_sentry=True,
        target_us=15,
        target_share=0.80,
        target_cold=(150, 18),
        target_p99=1.1,
        features=_OURS | {"Sentry perf"},
    ),
    Variant(
        "obs-prod-grpc",
        "obs",
        "obs-prod over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, the grpc extra) to a live gRPC collector",
        _env(
            **_PROD,
            OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp_grpc,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            SENTRY_DSN=_live_dsn,
        ),
        uses_otlp=True,
        uses_sentry=True,
        features=_OURS | {"Sentry perf"},
    ),
    Variant(
        "obs-prod-dead-otlp",
        "obs",
        "obs-prod with the collector dead (nothing listens at OTEL_EXPORTER_OTLP_ENDPOINT)",
        _env(**_PROD, OTEL_EXPORTER_OTLP_ENDPOINT=_dead_otlp, SENTRY_DSN=_live_dsn),
        uses_sentry=True,
        live="obs-prod",
    ),
    Variant(
        "obs-prod-dead-sentry",
        "obs",
        "obs-prod with Sentry dead (nothing listens at the DSN's host)",
        _env(**_PROD, OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp, SENTRY_DSN=_dead_dsn),
        uses_otlp=True,
        live="obs-prod",
    ),
    Variant(
        "obs-all100",
        "obs",
        "plugin, 100% traced to a live collector with Sentry errors: obs-prod + SENTRY_TRACES_SAMPLE_RATE=1.0, "
        "OMNII_OBS_SENTRY_TRACES=off",
        _env(**_ALL100, OMNII_OBS_SENTRY_TRACES="off"),
        uses_otlp=True,
        uses_sentry=True,
        target_us=40,
        target_share=0.65,
        target_p99=1.3,
        features=_OURS,
    ),
    Variant(
        "obs-all100-sentry-otlp",
        "obs",
        "obs-all100 plus Sentry performance at 100% through Sentry's OTLP endpoint (OMNII_OBS_SENTRY_TRACES=otlp)",
        _env(**_ALL100, OMNII_OBS_SENTRY_TRACES="otlp"),
        uses_otlp=True,
        uses_sentry=True,
        target_us=60,
        features=_OURS | {"Sentry perf"},
    ),
    Variant(
        "obs-all100-sentry-sdk",
        "obs",
        "obs-all100 plus Sentry performance at 100% through sentry-sdk's SentrySpanProcessor "
        "(OMNII_OBS_SENTRY_TRACES=sdk, the old path)",
        _env(**_ALL100, OMNII_OBS_SENTRY_TRACES="sdk"),
        uses_otlp=True,
        uses_sentry=True,
        target_us=60,
        features=_OURS | {"Sentry perf"},
    ),
    # ---------------------------------------------------------------- anchors: what people pick instead
    Variant(
        "litestar-otel",
        "litestar-otel",
        "anchor: Litestar's OpenTelemetryPlugin, SDK TracerProvider (always on), BatchSpanProcessor + OTLP/gRPC "
        "exporter to the live collector",
        _env(OTEL_EXPORTER_OTLP_ENDPOINT=_live_otlp_grpc),
        uses_otlp=True,
        features=frozenset({"traces"}),
    ),
    Variant(
        "sentry-litestar",
        "sentry-litestar",
        "anchor: sentry-sdk's LitestarIntegration, errors only (no traces_sample_rate), live ingest",
        _env(SENTRY_DSN=_live_dsn),
        uses_sentry=True,
        features=frozenset({"Sentry errors"}),
    ),
    Variant(
        "sentry-litestar-perf",
        "sentry-litestar",
        "anchor: sentry-sdk's LitestarIntegration with traces_sample_rate=1.0, live ingest",
        _env(SENTRY_DSN=_live_dsn, SENTRY_TRACES_SAMPLE_RATE="1.0"),
        uses_sentry=True,
        features=frozenset({"Sentry errors", "Sentry perf"}),
    ),
    Variant(
        "logfire",
        "logfire",
        "anchor: logfire.instrument_litestar(), logfire.configure(send_to_logfire=False, console=False) with a "
        "BatchSpanProcessor + OTLP/gRPC exporter to the live collector",
        _env(BENCH_OTLP_ENDPOINT=_live_otlp_grpc),
        uses_otlp=True,
        features=frozenset({"traces"}),
    ),
    Variant(
        "prometheus",
        "prometheus",
        "anchor: Litestar's Prometheus plugin (litestar.plugins.prometheus: PrometheusConfig(group_path=True) "
        "middleware + PrometheusController at /metrics)",
        _env(),
        features=frozenset({"metrics"}),
    ),
)

_BY_NAME = {v.name: v for v in VARIANTS}

# Inherited variables that would change what a variant measures.
_STRIPPED_PREFIXES = ("OTEL_", "SENTRY_", "OMNII_OBS_", "BENCH_", "LOGFIRE_", "GRANIAN_", "UVICORN_")
_STRIPPED = frozenset({"APP_ENV", "APP_VERSION", "PYTHONUNBUFFERED"})


def get(name: str) -> Variant:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(_BY_NAME)}") from None


def select(only: str | None) -> list[Variant]:
    """``BENCH_ONLY`` (comma-separated names) -> the variants to run, in table order, bare first.

    A dead-peer variant brings its live counterpart along, so the comparison can be made.
    """
    if not only or not only.strip():
        return list(VARIANTS)
    wanted = {get(name.strip()).name for name in only.split(",") if name.strip()}
    wanted |= {v.live for v in VARIANTS if v.name in wanted and v.live}
    return [v for v in VARIANTS if v.name == BARE or v.name in wanted]


def clean_environ(variant: Variant, endpoints: Endpoints, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a variant's process starts with: ours, minus anything inherited that would interfere."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(_STRIPPED_PREFIXES) and k not in _STRIPPED
    }
    env["BENCH_VARIANT"] = variant.name
    env.update(variant.env(endpoints))
    return env
