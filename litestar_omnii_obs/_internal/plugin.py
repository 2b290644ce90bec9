"""The one-line integration: ``plugins=[ObservabilityPlugin()]`` (the config read from the environment)."""

from __future__ import annotations

import logging
import queue
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from litestar.plugins import CLIPluginProtocol, InitPlugin

from litestar_omnii_obs._internal import runtime, shared, tracing
from litestar_omnii_obs._internal._bounded import run_bounded
from litestar_omnii_obs._internal._compat import sentry_litestar_hooks
from litestar_omnii_obs._internal.config import ObservabilityConfig
from litestar_omnii_obs._internal.hooks import ObserverMiddleware, RequestObserver
from litestar_omnii_obs._internal.policy import check_routes
from litestar_omnii_obs._internal.reporting import start_sentry
from litestar_omnii_obs._internal.sink import MetricWriter
from litestar_omnii_obs.cli import add_obs_commands

if TYPE_CHECKING:
    from click import Group
    from litestar import Litestar
    from litestar.config.app import AppConfig
    from opentelemetry.sdk.trace import TracerProvider

    from litestar_omnii_obs._internal.sentry import SentryReporter

__all__ = ["ObservabilityPlugin"]

_logger = logging.getLogger("litestar_omnii_obs")


class ObservabilityPlugin(InitPlugin, CLIPluginProtocol):
    """Adds latency records, metrics, Sentry and tracing to a Litestar app.

    ``on_app_init`` only adds to the app's configuration: its lifespan goes first (so
    it starts before anything else and stops last), its middleware goes outermost, and
    its ``before_send``/``after_exception`` hooks are appended after the user's.
    Nothing the user set is replaced. The SDKs start in the lifespan, so each worker
    process initialises its own after a fork. Everything the lifespan starts belongs to
    this instance: two apps in one process keep their own sinks, labels and providers.

    ``ObservabilityPlugin()`` reads the environment (:meth:`ObservabilityConfig.from_env`, so an
    invalid variable raises :class:`~litestar_omnii_obs.ConfigError` here);
    ``ObservabilityPlugin(ObservabilityConfig())`` uses the defaults alone.
    """

    __slots__ = ("_observer", "_runtime", "config")

    def __init__(self, config: ObservabilityConfig | None = None) -> None:
        self.config = config if config is not None else ObservabilityConfig.from_env()
        self._observer = RequestObserver(self.config)
        # What this app started (writer, tracer provider, Sentry reporter) while it runs; else None.
        self._runtime: runtime.Runtime | None = None

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The app's tracer provider while it runs (``None`` before start-up, after shutdown, or without tracing).

        For instrumenting other libraries with the same provider, or ``force_flush()`` in a test. A span
        processor added to it gets every recorded span, the requests' server spans included.
        """
        return None if self._runtime is None else self._runtime.tracer_provider

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.insert(0, self.lifespan)
        app_config.middleware.insert(0, ObserverMiddleware(self._observer))
        app_config.before_send.append(self._observer.before_send)
        app_config.after_exception.append(self._observer.after_exception)
        if self.config.sentry.dsn:
            _drop_sentry_litestar_hooks(app_config)
        return app_config

    def on_cli_init(self, cli: Group) -> None:
        """Add ``litestar obs`` (``config``, ``check``, ``test-error``) to the Litestar CLI."""
        add_obs_commands(cli, self.config)

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Start this app's writer, Sentry and providers before the first request; stop them in reverse.

        Everything started here belongs to this plugin instance and is undone at shutdown,
        each step off the event loop and bounded by its timeout, so a blocked sink or a dead
        peer cannot hold the shutdown.
        """
        for template in check_routes(app, self.config):  # a mistyped opt policy raises here, naming its route
            _logger.warning("OMNII_OBS_EXCLUDE_ROUTES: no route has the template %r", template)
        capture = runtime.active_capture()
        # Under obs_capture nothing leaves the process and the test decides the sampling, whatever the environment.
        config = self.config if capture is None else capture.confine(self.config)
        environment_warning = config.environment_warning()
        if environment_warning is not None:
            _logger.warning("%s", environment_warning)
        app_runtime = runtime.Runtime(config, MetricWriter(config))
        app_runtime.writer.start()  # here, so no request pays for starting the thread
        async with AsyncExitStack() as stack:
            stack.push_async_callback(_drain_log_queues)  # last: what the shutdown logged reaches its handlers
            stack.push_async_callback(self._close_writer, app_runtime)
            if capture is not None:
                app_runtime.metric_observers.append(capture.on_metric)
                app_runtime.request_observers.append(capture.on_metric)
            reporter = start_sentry(config, None if capture is None else capture.sentry_transport())
            if reporter is not None:
                app_runtime.sentry = reporter
                stack.push_async_callback(_close_sentry, reporter)
                from litestar_omnii_obs._internal.sentry import breadcrumb  # loaded by start_sentry already

                app_runtime.operation_observers.append(breadcrumb)
            telemetry = self._start_telemetry(app_runtime, stack, reporter, capture)
            self._observer.bind(app_runtime, telemetry)
            stack.callback(self._observer.bind, None, None)
            runtime.enter(app_runtime)
            stack.callback(runtime.leave, app_runtime)
            self._runtime = app_runtime
            stack.callback(setattr, self, "_runtime", None)
            if config.freeze_gc:
                runtime.freeze_gc_once()  # last: everything the start-up made is frozen with the rest
            yield

    @staticmethod
    def _start_telemetry(
        app_runtime: runtime.Runtime,
        stack: AsyncExitStack,
        reporter: SentryReporter | None,
        capture: runtime.Capture | None,
    ) -> tracing.Telemetry | None:
        """The app's providers (when tracing is on), their observers, and their shutdown on ``stack``."""
        config = app_runtime.config
        if not config.tracing_active:
            if config.tracing.enabled:
                _logger.warning("OTEL_SDK_DISABLED is set: no spans and no OTLP export (latency records stay)")
            return None
        processor = None if reporter is None else reporter.span_processor()
        telemetry = tracing.setup_telemetry(
            config,
            [processor] if processor else [],
            None if capture is None else capture.span_exporter(),
            # A captured test sends nothing to Sentry, spans included, whatever DSN the environment holds.
            None if reporter is None or capture is not None or config.sentry.traces != "otlp" else config.sentry.dsn,
        )
        stack.push_async_callback(telemetry.shutdown)
        app_runtime.tracer = telemetry.tracer
        app_runtime.tracer_provider = telemetry.tracer_provider
        telemetry.pending_lines = app_runtime.writer.pending
        if telemetry.records_metrics:
            app_runtime.operation_observers.append(telemetry.record_operation)
            app_runtime.metric_observers.append(telemetry.record_metric)
        stack.callback(shared.log_correlation.acquire())
        return telemetry

    @staticmethod
    async def _close_writer(app_runtime: runtime.Runtime) -> None:
        writer = app_runtime.writer
        timeout = app_runtime.config.metrics.shutdown_timeout
        if not await run_bounded(writer.close, timeout, "metrics-close"):
            _logger.error(
                "metric sink %r blocked for %.1fs at shutdown; %d metric line(s) lost (%s)",
                writer.sink,
                timeout,
                writer.abandon(),
                writer.loss_summary(),
            )


async def _drain_log_queues(timeout: float = 1.0) -> None:  # noqa: ASYNC109
    """Wait (bounded) until queue-based log handlers (Litestar's default) have written what is queued.

    Litestar's logging hands records to a listener thread and empties its queue only at exit;
    a server that ends with a re-raised SIGTERM (uvicorn) skips that, and the shutdown's own
    lines ("N metric line(s) lost") would be dropped.
    """
    queues: list[queue.Queue[object]] = []
    for name in (None, _logger.name):
        for handler in logging.getLogger(name).handlers:
            pending = getattr(handler, "queue", None)
            if isinstance(pending, queue.Queue):
                queues.append(pending)

    def drain() -> None:
        for pending in queues:
            pending.join()

    if queues:
        await run_bounded(drain, timeout, "log-drain")


async def _close_sentry(reporter: SentryReporter) -> None:
    timeout = reporter.config.sentry.flush_timeout
    # The bound has a margin: sentry-sdk's own flush gives up after ``timeout`` first.
    if not await run_bounded(reporter.close, timeout + 1.0, "sentry-flush"):
        _logger.warning("Sentry flush reached its %.1fs bound; events still queued were dropped", timeout)


def _drop_sentry_litestar_hooks(app_config: AppConfig) -> None:
    """Remove what sentry-sdk's LitestarIntegration injected, since the plugin reports errors itself.

    When a user calls ``sentry_sdk.init`` before building the app, that integration
    patches ``Litestar.__init__`` to add its own middleware and ``after_exception`` hook;
    with ours also present every error would be reported twice, and 4xx errors once.
    """
    hooks = sentry_litestar_hooks()
    if hooks is None:  # pragma: no cover - the integration needs litestar, which we have
        return
    hook, middleware = hooks
    before = (len(app_config.after_exception), len(app_config.middleware))
    app_config.after_exception = [h for h in app_config.after_exception if h is not hook]
    app_config.middleware = [m for m in app_config.middleware if m is not middleware]
    if before != (len(app_config.after_exception), len(app_config.middleware)):
        _logger.info("replaced sentry-sdk's LitestarIntegration hooks; the plugin reports errors itself")
