"""Exactly one ``api_latency`` record per request, whatever path the request takes.

Litestar's ``before_request``/``after_response`` hooks (Elysia's onRequest and
onAfterResponse) miss requests: 404/405 never reach them, a route-level hook replaces
the app-level one, guards, exceptions and cache hits skip one or the other, and
``after_response`` runs after background tasks and never sees the status. So the
record is built from three light pieces instead, each doing one job:

* :meth:`LatencyRecorder.middleware` (index 0 of the app's middleware, the outermost
  layer of every route) stamps the start time. It sees guards, exceptions, cache
  hits, streaming and route-level hooks, because all of them happen inside it.
* :meth:`LatencyRecorder.after_exception` stamps the start time of requests no route
  matched (404/405), which are raised by the router before any middleware runs.
* :meth:`LatencyRecorder.before_send` (app-level, sees every message of every
  response) keeps the status actually sent and writes the record when the last body
  byte leaves, so background tasks are not counted.

If a response never completes (the client went away mid-stream), the middleware
writes the record on the way out, so no request is left without one.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from litestar.enums import ScopeType

from litestar_omnii_obs.config import ObservabilityConfig
from litestar_omnii_obs.metrics import ApiLatencyMetric, log_metric

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LatencyRecorder"]

_logger = logging.getLogger("litestar_omnii_obs")

# Keys this module keeps in the ASGI scope for the duration of one request.
_START = "omnii_obs.start"
_STATUS = "omnii_obs.status"


class LatencyRecorder:
    """Builds ``api_latency`` records from a middleware stamp and the messages sent."""

    __slots__ = ("_exact", "_failed", "_opt_key", "_prefixes", "_unmatched")

    def __init__(self, config: ObservabilityConfig) -> None:
        latency = config.latency
        self._exact = frozenset(p for p in latency.exclude_paths if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in latency.exclude_paths if p.endswith("*"))
        self._opt_key = latency.opt_key
        self._unmatched = latency.unmatched_route
        self._failed = False

    def is_excluded(self, path: str) -> bool:
        """Whether ``path`` is in the configured exclusions (exact, or prefix with ``*``)."""
        return path in self._exact or path.startswith(self._prefixes)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware factory: the outermost layer of each route."""
        opt_key = self._opt_key

        async def stamp_start(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            state = cast("dict[str, Any]", scope)
            if not self.is_excluded(scope["path"]) and scope["route_handler"].opt.get(opt_key, True) is not False:
                state[_START] = perf_counter()
            try:
                await app(scope, receive, send)
            finally:
                if state.get(_START) is not None:  # the response never finished
                    self._emit(state, state.get(_STATUS, 500))

        return stamp_start

    async def after_exception(self, exc: BaseException, scope: Scope) -> None:
        """Stamp requests that failed before reaching a route (no route or method matched)."""
        if scope["type"] == ScopeType.HTTP and "path_template" not in scope and not self.is_excluded(scope["path"]):
            cast("dict[str, Any]", scope).setdefault(_START, perf_counter())

    async def before_send(self, message: Message, scope: Scope) -> None:
        """Keep the status sent; write the record when the last body byte goes out."""
        state = cast("dict[str, Any]", scope)
        if _START not in state:
            return
        if message["type"] == "http.response.start":
            state[_STATUS] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self._emit(state, state.get(_STATUS, 500))

    def _mount_label(self, state: dict[str, Any]) -> str:
        """Litestar leaves ``path_template`` empty for mounted apps: use the mount path."""
        handler = state.get("route_handler")
        if handler is None:
            return self._unmatched
        paths: list[str] = sorted(handler.paths, key=len, reverse=True)
        raw = state.get("raw_path", b"").decode("latin-1")
        return next((p for p in paths if raw.startswith(p)), paths[0])

    def _emit(self, state: dict[str, Any], status: int) -> None:
        try:
            start = state.pop(_START)
            log_metric(
                ApiLatencyMetric(
                    route=state.get("path_template") or self._mount_label(state),
                    method=state["method"],
                    status=status,
                    duration=round((perf_counter() - start) * 1000.0, 3),
                )
            )
        except Exception:  # never let a metric break a response
            if not self._failed:
                self._failed = True
                _logger.exception("api_latency record failed; further failures are not logged")
