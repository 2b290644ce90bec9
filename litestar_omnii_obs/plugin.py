"""The one-line integration: ``plugins=[ObservabilityPlugin(ObservabilityConfig.from_env())]``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from litestar.plugins import CLIPluginProtocol, InitPlugin

from litestar_omnii_obs import metrics, sentry, tracing
from litestar_omnii_obs.cli import add_obs_commands
from litestar_omnii_obs.config import ObservabilityConfig
from litestar_omnii_obs.hooks import ObserverMiddleware, RequestObserver

if TYPE_CHECKING:
    from click import Group
    from litestar import Litestar
    from litestar.config.app import AppConfig

__all__ = ["ObservabilityPlugin"]

_logger = logging.getLogger("litestar_omnii_obs")


class ObservabilityPlugin(InitPlugin, CLIPluginProtocol):
    """Adds latency records, metrics, Sentry and tracing to a Litestar app.

    ``on_app_init`` only adds to the app's configuration: its lifespan goes first (so
    it starts before anything else and stops last), its middleware goes outermost, and
    its ``before_send``/``after_exception`` hooks are appended after the user's.
    Nothing the user set is replaced. The SDKs start in the lifespan, so each worker
    process initialises its own after a fork.
    """

    __slots__ = ("config", "observer")

    def __init__(self, config: ObservabilityConfig | None = None) -> None:
        self.config = config if config is not None else ObservabilityConfig()
        self.observer = RequestObserver(self.config)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.insert(0, self.lifespan)
        app_config.middleware.insert(0, ObserverMiddleware(self.observer))
        app_config.before_send.append(self.observer.before_send)
        app_config.after_exception.append(self.observer.after_exception)
        if self.config.sentry.dsn:
            _drop_sentry_litestar_hooks(app_config)
        return app_config

    def on_cli_init(self, cli: Group) -> None:
        """Add ``litestar obs`` (``config``, ``check``, ``test-error``) to the Litestar CLI."""
        add_obs_commands(cli, self.config)

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Start the SDKs before the first request; flush everything at shutdown, in reverse."""
        config = self.config
        async with AsyncExitStack() as stack:
            metrics.configure_metrics(config)
            stack.callback(metrics.flush_metrics)
            if sentry.init_sentry(config, use_otel=config.tracing.enabled):
                stack.callback(sentry.flush_sentry, config.sentry.flush_timeout)
            if config.tracing.enabled:
                processor = sentry.sentry_span_processor(config) if sentry.sentry_enabled() else None
                telemetry = tracing.setup_telemetry(config, [processor] if processor else [])
                stack.push_async_callback(telemetry.shutdown)
                self.observer.bind(telemetry)
                stack.callback(self.observer.bind, None)
                metrics.set_tracer(telemetry.tracer)
                stack.callback(metrics.set_tracer, None)
                if telemetry.records_metrics:
                    stack.callback(metrics.add_observers(telemetry.record_operation, telemetry.record_metric))
                stack.callback(tracing.install_log_correlation())
            yield


def _drop_sentry_litestar_hooks(app_config: AppConfig) -> None:
    """Remove what sentry-sdk's LitestarIntegration injected, since the plugin reports errors itself.

    When a user calls ``sentry_sdk.init`` before building the app, that integration
    patches ``Litestar.__init__`` to add its own middleware and ``after_exception`` hook;
    with ours also present every error would be reported twice, and 4xx errors once.
    """
    try:
        from sentry_sdk.integrations import litestar as sentry_litestar
    except Exception:  # pragma: no cover - the integration needs litestar, which we have
        return
    hook = sentry_litestar.exception_handler
    middleware = sentry_litestar.SentryLitestarASGIMiddleware
    before = (len(app_config.after_exception), len(app_config.middleware))
    app_config.after_exception = [h for h in app_config.after_exception if h is not hook]
    app_config.middleware = [m for m in app_config.middleware if m is not middleware]
    if before != (len(app_config.after_exception), len(app_config.middleware)):
        _logger.info("replaced sentry-sdk's LitestarIntegration hooks; the plugin reports errors itself")
