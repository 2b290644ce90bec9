"""The one-line integration: ``plugins=[ObservabilityPlugin(ObservabilityConfig.from_env())]``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from litestar.plugins import InitPlugin

from litestar_omnii_obs.config import ObservabilityConfig
from litestar_omnii_obs.latency import LatencyRecorder
from litestar_omnii_obs.metrics import configure_metrics, flush_metrics

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.config.app import AppConfig

__all__ = ["ObservabilityPlugin"]

_logger = logging.getLogger("litestar_omnii_obs")


class ObservabilityPlugin(InitPlugin):
    """Adds latency records, metrics, Sentry and tracing to a Litestar app.

    ``on_app_init`` only adds to the app's configuration: its lifespan goes first (so
    it starts before anything else and stops last), its middleware goes outermost, and
    its ``before_send``/``after_exception`` hooks are appended after the user's.
    Nothing the user set is replaced.
    """

    __slots__ = ("config", "latency")

    def __init__(self, config: ObservabilityConfig | None = None) -> None:
        self.config = config if config is not None else ObservabilityConfig()
        self.latency = LatencyRecorder(self.config) if self.config.latency.enabled else None

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.insert(0, self.lifespan)
        if self.latency is not None:
            app_config.middleware.insert(0, self.latency.middleware)
            app_config.before_send.append(self.latency.before_send)
            app_config.after_exception.append(self.latency.after_exception)
        return app_config

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Start the SDKs before the first request; flush everything at shutdown."""
        async with AsyncExitStack() as stack:
            configure_metrics(self.config)
            stack.callback(flush_metrics)
            yield
