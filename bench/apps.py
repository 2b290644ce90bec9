"""The benchmarked app, one per variant: ``BENCH_VARIANT=<name> uvicorn bench.apps:app``.

Every variant serves the same route, ``GET /users/{user_id:int}`` returning a small JSON dict; only the
observability around it differs. Imports are made per variant, so bare Litestar loads none of the SDKs.
Our plugin is configured the way a user would: ``ObservabilityConfig.from_env()``.
"""

from __future__ import annotations

import json
import logging
import os
from time import perf_counter
from typing import Any

from litestar import Litestar, Request, get
from litestar.params import FromPath

from bench import variants


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, object]:
    return {"id": user_id, "name": f"user-{user_id}"}


HANDLERS = [get_user]


def bare_app() -> Litestar:
    return Litestar(route_handlers=HANDLERS)


def obs_app() -> Litestar:
    from litestar_omnii_obs import ObservabilityConfig, ObservabilityPlugin

    return Litestar(route_handlers=HANDLERS, plugins=[ObservabilityPlugin(ObservabilityConfig.from_env())])


def _otel_plugin() -> Any:
    """Litestar's own OpenTelemetryPlugin on an SDK TracerProvider; OTLP export only if an endpoint is set."""
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the endpoint itself
    return OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider))


def _init_sentry() -> None:
    """sentry-sdk as its docs show it: init before the app is built, so LitestarIntegration patches it."""
    import sentry_sdk
    from sentry_sdk.integrations.litestar import LitestarIntegration

    sentry_sdk.init(
        dsn=os.environ["SENTRY_DSN"],
        traces_sample_rate=float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE", "1.0")),
        integrations=[LitestarIntegration()],
    )


def litestar_otel_app() -> Litestar:
    return Litestar(route_handlers=HANDLERS, plugins=[_otel_plugin()])


def sentry_litestar_app() -> Litestar:
    _init_sentry()
    return Litestar(route_handlers=HANDLERS)


def litestar_otel_sentry_app() -> Litestar:
    _init_sentry()
    return Litestar(route_handlers=HANDLERS, plugins=[_otel_plugin()])


_naive_logger = logging.getLogger("bench.naive")


def _naive_startup() -> None:
    # Added at startup: Litestar configures logging when the app is built.
    handler = logging.FileHandler(os.environ.get("BENCH_LOG_FILE", os.devnull))
    handler.setFormatter(logging.Formatter("%(message)s"))
    _naive_logger.addHandler(handler)
    _naive_logger.setLevel(logging.INFO)
    _naive_logger.propagate = False


def _naive_shutdown() -> None:
    for handler in list(_naive_logger.handlers):
        _naive_logger.removeHandler(handler)
        handler.close()


async def _naive_before(request: Request[Any, Any, Any]) -> None:
    request.state.bench_start = perf_counter()


async def _naive_after(request: Request[Any, Any, Any]) -> None:
    duration = (perf_counter() - request.state.bench_start) * 1000.0
    _naive_logger.info(
        json.dumps(
            {
                "metric": "api_latency",
                "route": request.scope.get("path_template") or request.url.path,
                "method": request.method,
                "duration": round(duration, 3),
            }
        )
    )


def naive_logging_app() -> Litestar:
    """What one would write by hand with Litestar's hooks (no status: after_response never sees it)."""
    return Litestar(
        route_handlers=HANDLERS,
        before_request=_naive_before,
        after_response=_naive_after,
        on_startup=[_naive_startup],
        on_shutdown=[_naive_shutdown],
    )


BUILDERS = {
    "bare": bare_app,
    "obs": obs_app,
    "litestar-otel": litestar_otel_app,
    "sentry-litestar": sentry_litestar_app,
    "litestar-otel-sentry": litestar_otel_sentry_app,
    "naive-logging": naive_logging_app,
}


def build(name: str) -> Litestar:
    """The app of variant ``name``."""
    return BUILDERS[variants.get(name).app]()


app = build(os.environ.get("BENCH_VARIANT", variants.BARE))
