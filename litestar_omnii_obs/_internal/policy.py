"""What is observed on each route: the handler's ``opt`` policy and ``OMNII_OBS_EXCLUDE_ROUTES``, resolved once.

A route handler's ``opt[opt_key]`` (inherited from its Router, Controller and app as Litestar
inherits ``opt``: a lower layer's value replaces the whole mapping) is either ``False`` (nothing
observed), or a mapping of:

* ``traces``: a sample rate in [0, 1] for requests that start a trace here, or ``False`` (no span
  even when the caller's trace is sampled); unset: the configured sampler decides;
* ``latency``: whether the ``api_latency`` line is written (default ``True``);
* ``metrics``: whether the request-duration histogram gets a point (default ``True``);
* ``sentry_statuses``: the statuses whose exception is reported to Sentry on this route.

:func:`route_policy` turns one handler into a :class:`RoutePolicy` (the middleware does it once per
handler); :func:`check_routes` parses every handler of an app at start-up, so a mistyped key or
value fails there, naming the route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from litestar_omnii_obs._internal.config import ConfigError

if TYPE_CHECKING:
    from litestar import Litestar

    from litestar_omnii_obs._internal.config import ObservabilityConfig

__all__ = ["RoutePolicy", "check_routes", "route_policy"]

_KEYS = ("traces", "latency", "metrics", "sentry_statuses")


class RoutePolicy(msgspec.Struct, frozen=True):
    """One route handler's observation, as every request to it takes it (built once per handler)."""

    observed: bool = True
    """Anything at all: an HTTP handler not opted out and not in ``exclude_routes``."""
    template: str = ""
    """Its path template; ``""`` for a mounted app (labelled by its mount path per request)."""
    check_path: bool = True
    """Whether a request's path must be checked against ``exclude_paths``."""
    trace_bound: int | None = None
    """``traces`` as a trace-id bound (see :mod:`.sampling`); ``None``: the configured sampler decides."""
    latency: bool = True
    metrics: bool = True
    sentry_statuses: frozenset[int] | None = None
    """``None``: the configured ``capture_status_codes``."""
    websocket: bool = False
    """A websocket route: one span and one ``websocket_session`` record per connection."""
    own_sampling: bool = False
    """Whether its requests are decided by :meth:`.sampling.ServerSampling.decide` (an ``opt`` rate, or the
    user's ``traces_sampler``) instead of the configured sampler's shortest way."""

    @property
    def traced(self) -> bool:
        """Whether this route may have spans at all (``traces`` is not ``False`` or 0)."""
        return self.trace_bound is None or self.trace_bound > 0


#: An opted-out or excluded route, or a handler that is not HTTP.
UNOBSERVED = RoutePolicy(observed=False, check_path=False)


def default_policy(config: ObservabilityConfig) -> RoutePolicy:
    """The policy of requests no route matched (404/405): the configured defaults."""
    return RoutePolicy(own_sampling=config.traces_sampler is not None)


def route_policy(handler: Any, template: str, check_path: bool, config: ObservabilityConfig, where: str) -> RoutePolicy:
    """``handler``'s policy (its ``opt``, the excluded templates); raises :class:`ConfigError` naming ``where``."""
    value = handler.opt.get(config.latency.opt_key, True)
    if value is False or template in config.latency.exclude_routes:
        return UNOBSERVED
    problems: list[tuple[str, str, str]] = []
    fields = _parse(value, config.latency.opt_key, where, problems)
    if problems:
        raise ConfigError(problems)
    own = fields.get("trace_bound") is not None or config.traces_sampler is not None
    return RoutePolicy(template=template, check_path=check_path, own_sampling=own, **fields)


def check_routes(app: Litestar, config: ObservabilityConfig) -> list[str]:
    """Parse the policy of every route handler of ``app`` (HTTP, websocket, mounted ASGI); returns the
    excluded templates no route has.

    Raises:
        ConfigError: every mistyped ``opt`` policy, each naming its route and handler.
    """
    problems: list[tuple[str, str, str]] = []
    templates: set[str] = set()
    for route in app.routes:
        single = getattr(route, "route_handler", None)  # websocket and ASGI routes have one handler
        handlers: Iterable[Any] = getattr(route, "route_handlers", ()) if single is None else (single,)
        for handler in handlers:
            templates.add(route.path_format)
            value = handler.opt.get(config.latency.opt_key, True)
            _parse(value, config.latency.opt_key, _where(route.path_format, handler), problems)
    if problems:
        raise ConfigError(problems)
    return [t for t in config.latency.exclude_routes if t not in templates]


def _where(template: str, handler: Any) -> str:
    methods = ",".join(sorted(getattr(handler, "http_methods", ()))) or "route"
    return f"{methods} {template} ({handler.handler_name})"


def _parse(value: object, key: str, where: str, problems: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The fields of a policy mapping; each problem named ``opt['<key>'] of <route>``."""
    name = f"opt[{key!r}] of {where}"
    if value is True or value is False:
        return {}
    if not isinstance(value, Mapping):
        problems.append((name, repr(value), f"False, or a mapping with keys {', '.join(_KEYS)}"))
        return {}
    fields: dict[str, Any] = {}
    for item, setting in value.items():
        parse = _PARSERS.get(item)
        if parse is None:
            problems.append((f"{name}[{item!r}]", repr(setting), "one of the keys " + ", ".join(_KEYS)))
            continue
        try:
            fields[_FIELDS[item]] = parse(setting)
        except ValueError as exc:
            problems.append((f"{name}[{item!r}]", repr(setting), str(exc)))
    return fields


def _traces(value: object) -> int | None:
    if value is True:
        return None
    if value is False:
        return 0
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return TraceIdRatioBased.get_bound_for_rate(float(value))
    raise ValueError("a sample rate in [0, 1], or False (no span), or True (the configured sampler)")


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("True or False")


def _statuses(value: object) -> frozenset[int]:
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        codes = list(value)
        if all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
            return frozenset(codes)
    raise ValueError("a collection of HTTP status codes (integers 100-599), e.g. range(500, 600)")


_PARSERS = {"traces": _traces, "latency": _flag, "metrics": _flag, "sentry_statuses": _statuses}
_FIELDS = {"traces": "trace_bound", "latency": "latency", "metrics": "metrics", "sentry_statuses": "sentry_statuses"}
