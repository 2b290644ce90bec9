"""The benchmarked app, one per variant: ``BENCH_VARIANT=<name> uvicorn bench.apps:app``.

Every variant serves the same route, ``GET /users/{user_id:int}`` returning a small JSON dict; only the
observability around it differs. Imports are made per variant, so bare Litestar loads none of the SDKs.
Our plugin is configured the way a user would: ``ObservabilityConfig.from_env()``. The anchors are set up
the way their docs show, exporting only to the benchmark's own peers on 127.0.0.1.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from litestar import Litestar, get
from litestar.params import FromPath

from bench import variants

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, object]:
    return {"id": user_id, "name": f"user-{user_id}"}


HANDLERS = [get_user]

#: Tracer providers an anchor made without installing them globally (see :func:`flush`).
_PROVIDERS: list[Any] = []


def bare_app() -> Litestar:
    return Litestar(route_handlers=HANDLERS)


def hooks_app() -> Litestar:
    """Litestar with the three hook points the plugin uses, each doing nothing: what Litestar itself spends.

    A route middleware that wraps ``send`` (any first route middleware also makes Litestar put an exception
    layer between it and the handler), an app-level ``before_send`` and an ``after_exception``.
    """

    def middleware(app: ASGIApp) -> ASGIApp:
        async def observe(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_through(message: Message) -> None:
                await send(message)

            await app(scope, receive, send_through)

        return observe

    async def before_send(message: Message, scope: Scope) -> None:
        return None

    async def after_exception(exc: Exception, scope: Scope) -> None:
        return None

    return Litestar(
        route_handlers=HANDLERS, middleware=[middleware], before_send=[before_send], after_exception=[after_exception]
    )


def obs_app() -> Litestar:
    from litestar_omnii_obs import ObservabilityConfig, ObservabilityPlugin

    return Litestar(route_handlers=HANDLERS, plugins=[ObservabilityPlugin(ObservabilityConfig.from_env())])


def _batch_otlp(endpoint: str) -> Any:
    """A BatchSpanProcessor with the OTLP/gRPC exporter (the SDK defaults otherwise)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))


def litestar_otel_app() -> Litestar:
    """Litestar's own OpenTelemetryPlugin on an SDK TracerProvider exporting to OTEL_EXPORTER_OTLP_ENDPOINT."""
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(_batch_otlp(os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]))
    _PROVIDERS.append(provider)
    return Litestar(
        route_handlers=HANDLERS, plugins=[OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider))]
    )


def sentry_litestar_app() -> Litestar:
    """sentry-sdk as its docs show it: init before the app is built, so LitestarIntegration patches it."""
    import sentry_sdk
    from sentry_sdk.integrations.litestar import LitestarIntegration

    rate = os.environ.get("SENTRY_TRACES_SAMPLE_RATE")
    sentry_sdk.init(
        dsn=os.environ["SENTRY_DSN"],
        traces_sample_rate=float(rate) if rate else None,
        integrations=[LitestarIntegration()],
    )
    return Litestar(route_handlers=HANDLERS)


def logfire_app() -> Any:
    """``logfire.instrument_litestar()`` with nothing sent to Logfire's service: spans go to our collector.

    Logfire's own OTLP exporter (used when OTEL_EXPORTER_OTLP_ENDPOINT is set) speaks OTLP/HTTP, and the
    benchmark's receiver is gRPC, so the export is an explicit span processor instead.
    """
    import logfire

    logfire.configure(
        send_to_logfire=False,
        console=False,
        service_name="bench",
        inspect_arguments=False,
        additional_span_processors=[_batch_otlp(os.environ["BENCH_OTLP_ENDPOINT"])],
    )
    return logfire.instrument_litestar(Litestar(route_handlers=HANDLERS))


def prometheus_app() -> Litestar:
    """Litestar's Prometheus plugin as its docs show it: the middleware and the /metrics controller."""
    from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

    config = PrometheusConfig(app_name="bench", group_path=True)
    return Litestar(route_handlers=[*HANDLERS, PrometheusController], middleware=[config.middleware])


BUILDERS = {
    "bare": bare_app,
    "bare-hooks": hooks_app,
    "obs": obs_app,
    "litestar-otel": litestar_otel_app,
    "sentry-litestar": sentry_litestar_app,
    "logfire": logfire_app,
    "prometheus": prometheus_app,
}


def flush(timeout: float = 2.0) -> None:
    """Finish the work already queued for background threads: span batches, Sentry's transport queue.

    The in-process benchmark calls it at the end of each repeat, inside the measured window, so what a
    repeat's requests queued is counted in that repeat (a batch processor exports every 5 s otherwise).
    """
    import sys

    from opentelemetry import trace

    for provider in [trace.get_tracer_provider(), *_PROVIDERS]:
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush(int(timeout * 1000))
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is not None and sentry_sdk.is_initialized():
        sentry_sdk.flush(timeout)


def build(name: str) -> Any:
    """The ASGI app of variant ``name``."""
    return BUILDERS[variants.get(name).app]()


#: What each app imports beyond Litestar: the cold-start table times these apart from building the app.
IMPORTS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "bare-hooks": (),
    "obs": ("litestar_omnii_obs",),
    "litestar-otel": (
        "litestar.plugins.opentelemetry",
        "opentelemetry.sdk.trace",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ),
    "sentry-litestar": ("sentry_sdk", "sentry_sdk.integrations.litestar"),
    "logfire": (
        "logfire",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ),
    "prometheus": ("litestar.plugins.prometheus",),
}


def import_libraries(name: str) -> None:
    """Import what variant ``name``'s app needs, without building it."""
    import importlib

    for module in IMPORTS[variants.get(name).app]:
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    """``app``, built on first access (``uvicorn bench.apps:app``, ``from bench.apps import app``) from
    BENCH_VARIANT, so importing this module builds nothing (the cold-start table times the two apart)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = build(os.environ.get("BENCH_VARIANT", variants.BARE))
    globals()["app"] = built
    return built
