"""Typed configuration, read from code or from the environment.

Every option lives on a frozen :class:`msgspec.Struct` with a documented default.
:meth:`ObservabilityConfig.from_env` reads the environment variables listed in the
README, validates all of them, and raises one :class:`ConfigError` naming every bad
variable, its value and what is allowed. As in the OpenTelemetry specification, a
variable set to the empty string is treated as unset, so its default applies.

Secrets (the Sentry DSN's key, OTLP header values) never appear in ``repr()``/``str()``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
from sentry_sdk.utils import BadDsn, Dsn

__all__ = [
    "ConfigError",
    "LatencyConfig",
    "MetricsConfig",
    "ObservabilityConfig",
    "SentryConfig",
    "TracingConfig",
]

_T = TypeVar("_T")
_logger = logging.getLogger("litestar_omnii_obs")

#: Prefix of this package's own variables; unknown names with it are warned about.
ENV_PREFIX = "OMNII_OBS_"

_MAX_INT = 2**31 - 1
_HEADER_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_."
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


class ConfigError(ValueError):
    """Raised when configuration values are invalid; lists every problem at once."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        lines = [f"  {name}={value!r}: {allowed}" for name, value, allowed in problems]
        super().__init__("invalid observability configuration:\n" + "\n".join(lines))


def redact_url(url: str | None) -> str | None:
    """The URL with its user-info part (a Sentry DSN's key, a password) shown as ``***``."""
    if url is None:
        return None
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{host}").geturl()


class SentryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Error reporting to Sentry. ``dsn=None`` turns it off (with one warning)."""

    dsn: str | None = None
    """Project DSN (``SENTRY_DSN``). Unset: Sentry is off, the app runs normally."""
    environment: str | None = None
    """``SENTRY_ENVIRONMENT``; ``None`` means the top-level ``environment`` (``APP_ENV``)."""
    release: str | None = None
    """``SENTRY_RELEASE``; ``None`` means the top-level ``version`` (``APP_VERSION``)."""
    traces_sample_rate: float | None = None
    """``SENTRY_TRACES_SAMPLE_RATE`` in [0, 1]; ``None``: 0.1 in production, else 1.0."""
    ignore_errors: tuple[str, ...] = ("asyncio.CancelledError", "ConnectionError", "TimeoutError")
    """Exception types never reported, by (qualified) name (``OMNII_OBS_SENTRY_IGNORE_ERRORS``)."""
    capture_status_codes: frozenset[int] = frozenset(range(500, 600))
    """Response statuses whose exception is reported (``OMNII_OBS_SENTRY_CAPTURE_STATUS``, e.g. ``500-599``)."""
    scrub_keys: tuple[str, ...] = ()
    """Extra keys scrubbed from events, beyond the built-in denylist (``OMNII_OBS_SENTRY_SCRUB_KEYS``)."""
    send_default_pii: bool = False
    """Let sentry-sdk attach IPs, cookies and user data (``OMNII_OBS_SENTRY_SEND_PII``)."""
    flush_timeout: float = 5.0
    """Seconds the shutdown waits for queued events (``OMNII_OBS_SENTRY_FLUSH_TIMEOUT``)."""

    def __post_init__(self) -> None:
        if self.traces_sample_rate is not None and not 0.0 <= self.traces_sample_rate <= 1.0:
            raise ConfigError([("traces_sample_rate", str(self.traces_sample_rate), "a number in [0, 1]")])

    def __repr__(self) -> str:
        return (
            f"SentryConfig(dsn={redact_url(self.dsn)!r}, environment={self.environment!r}, "
            f"release={self.release!r}, traces_sample_rate={self.traces_sample_rate!r}, "
            f"ignore_errors={self.ignore_errors!r}, send_default_pii={self.send_default_pii!r}, "
            f"flush_timeout={self.flush_timeout!r})"
        )

    __str__ = __repr__


class TracingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """OpenTelemetry tracing. The SDK's own ``OTEL_*`` variables keep their spec meaning."""

    enabled: bool = True
    """Create a server span per request (``OMNII_OBS_TRACING``)."""
    otlp_endpoint: str | None = None
    """OTLP/gRPC endpoint; unset means no export.

    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    otlp_metrics_endpoint: str | None = None
    """OTLP/gRPC endpoint for metrics (``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``); ``None``: ``otlp_endpoint``."""
    otlp_headers: tuple[tuple[str, str], ...] = ()
    """Headers sent to the collector (``OTEL_EXPORTER_OTLP_HEADERS``); values are never printed."""
    console: bool = False
    """With no endpoint, print finished spans to stderr instead (``OMNII_OBS_TRACES_CONSOLE``)."""
    shutdown_timeout: float = 5.0
    """Seconds the shutdown may spend flushing spans (``OMNII_OBS_SHUTDOWN_TIMEOUT``)."""
    export_timeout: float = 5.0
    """Seconds one OTLP export may take, retries included (``OMNII_OBS_EXPORT_TIMEOUT``)."""
    use_global_provider: bool = True
    """If the app already installed an SDK ``TracerProvider``, use it (``OMNII_OBS_USE_APP_PROVIDER``)."""
    set_global_provider: bool = True
    """Install our provider globally so spans users start nest under the request span."""

    def __repr__(self) -> str:
        headers = tuple((k, "***") for k, _ in self.otlp_headers)
        return (
            f"TracingConfig(enabled={self.enabled!r}, otlp_endpoint={redact_url(self.otlp_endpoint)!r}, "
            f"otlp_headers={headers!r}, console={self.console!r}, shutdown_timeout={self.shutdown_timeout!r})"
        )

    __str__ = __repr__


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how metric JSON lines are written."""

    sink: str = "stdout"
    """``stdout``, ``stderr``, ``off`` or a file path, appended to (``OMNII_OBS_METRICS_SINK``)."""
    max_queue: int = 10_000
    """Lines held while the writer catches up; beyond it lines are dropped and counted.

    ``OMNII_OBS_METRICS_MAX_QUEUE``."""
    flush_interval: float = 0.05
    """Seconds between background writes (``OMNII_OBS_METRICS_FLUSH_INTERVAL``)."""


class LatencyConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Per-route ``api_latency`` records."""

    enabled: bool = True
    """Record ``api_latency`` for every request (``OMNII_OBS_LATENCY``)."""
    exclude_paths: tuple[str, ...] = ("/health",)
    """Paths with no record and no span: exact, or a prefix when ending in ``*`` (``OMNII_OBS_EXCLUDE_PATHS``)."""
    opt_key: str = "observability"
    """A handler with ``opt={opt_key: False}`` is not recorded (``OMNII_OBS_OPT_KEY``)."""
    unmatched_route: str = "UNMATCHED"
    """Route label for requests no route matched, e.g. 404 and 405 (``OMNII_OBS_UNMATCHED_ROUTE``)."""


class ObservabilityConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the plugin does, in one value. Build it in code or with :meth:`from_env`."""

    environment: str = "development"
    """Deployment environment (``APP_ENV``)."""
    version: str = "1.0.0"
    """Release / service version (``APP_VERSION``)."""
    service_name: str = "omnii-mcp"
    """Service name on metrics and spans (``OTEL_SERVICE_NAME``)."""
    latency: LatencyConfig = msgspec.field(default_factory=LatencyConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    sentry: SentryConfig = msgspec.field(default_factory=SentryConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)

    @property
    def sentry_traces_sample_rate(self) -> float:
        """The effective Sentry rate: explicit, else 0.1 in production and 1.0 elsewhere."""
        if self.sentry.traces_sample_rate is not None:
            return self.sentry.traces_sample_rate
        return 0.1 if self.environment == "production" else 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ObservabilityConfig:
        """Read the configuration from ``environ`` (default ``os.environ``).

        Raises:
            ConfigError: listing every invalid variable, its value and what is allowed.
        """
        return _EnvReader(os.environ if environ is None else environ).read()


# --------------------------------------------------------------------------- parsing


class _Invalid(Exception):
    """A value failed to parse; the message says what is allowed."""


def _label(value: str) -> str:
    if not value.strip() or any(c.isspace() or not c.isprintable() for c in value) or len(value) > 200:
        raise _Invalid("a non-blank label of at most 200 printable characters, without spaces")
    return value


def _float(low: float, high: float | None) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isnan(number) or number < low or (high is not None and number > high) or math.isinf(number):
            upper = f", {high}]" if high is not None else ", inf)"
            raise _Invalid(f"a number in [{low}{upper}")
        return number

    return parse


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 0 < number <= _MAX_INT:
        raise _Invalid(f"a positive integer up to {_MAX_INT}")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _Invalid("one of true, false, 1, 0, yes, no, on, off")


def _dsn(value: str) -> str:
    parts = urlsplit(value)
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.username or not project.isdigit():
        raise _Invalid("a Sentry DSN like https://<key>@<host>/<project-id>")
    try:
        _ = parts.port
        Dsn(value)
    except (ValueError, BadDsn):
        raise _Invalid("a Sentry DSN like https://<key>@<host>/<project-id>") from None
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    try:
        _ = parts.port
    except ValueError:
        raise _Invalid("a URL like http://host:4317") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("a URL like http://host:4317")
    return value


def _headers(value: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        name, text = unquote(key.strip()).lower(), unquote(val.strip())
        if not sep or not name or name.strip(_HEADER_NAME_CHARS) or not (text.isascii() and text.isprintable()):
            raise _Invalid("comma-separated key=value pairs; names of a-z 0-9 - _ . and printable ASCII values")
        pairs.append((name, text))
    return tuple(pairs)


def _paths(value: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in value.split(",") if p.strip())
    if not paths or any(not p.startswith("/") or "*" in p[:-1] for p in paths):
        raise _Invalid("comma-separated paths starting with '/', optionally ending in '*'")
    return paths


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names or any(not all(part.isidentifier() for part in n.split(".")) for n in names):
        raise _Invalid("comma-separated exception names such as ConnectionError,asyncio.CancelledError")
    return names


def _keys(value: str) -> tuple[str, ...]:
    return tuple(k.strip().lower() for k in value.split(",") if k.strip())


def _status_codes(value: str) -> frozenset[int]:
    codes: set[int] = set()
    try:
        for item in value.split(","):
            low, dash, high = item.strip().partition("-")
            start, end = int(low), int(high if dash else low)
            if not 100 <= start <= end <= 599:
                raise ValueError
            codes.update(range(start, end + 1))
    except ValueError:
        raise _Invalid("comma-separated HTTP status codes or ranges within 100-599, e.g. 500-599") from None
    return frozenset(codes)


def _sink(value: str) -> str:
    if value in ("stdout", "stderr", "off"):
        return value
    if not value.strip() or value != value.strip() or "\x00" in value:
        raise _Invalid("stdout, stderr, off, or a file path in an existing directory")
    directory = os.path.dirname(os.path.abspath(value))
    if os.path.isdir(value) or not os.path.isdir(directory):
        raise _Invalid("stdout, stderr, off, or a file path in an existing directory")
    return value


def _sampler(value: str) -> str:
    if value not in _SAMPLERS:
        raise _Invalid("one of " + ", ".join(_SAMPLERS))
    return value


#: Every variable this package reads (beyond the SDKs' own), for the unknown-name check.
KNOWN_PREFIXED = frozenset(
    {
        "OMNII_OBS_EXCLUDE_PATHS",
        "OMNII_OBS_METRICS_SINK",
        "OMNII_OBS_METRICS_MAX_QUEUE",
        "OMNII_OBS_METRICS_FLUSH_INTERVAL",
        "OMNII_OBS_LATENCY",
        "OMNII_OBS_OPT_KEY",
        "OMNII_OBS_UNMATCHED_ROUTE",
        "OMNII_OBS_SENTRY_IGNORE_ERRORS",
        "OMNII_OBS_SENTRY_CAPTURE_STATUS",
        "OMNII_OBS_SENTRY_SCRUB_KEYS",
        "OMNII_OBS_SENTRY_SEND_PII",
        "OMNII_OBS_SENTRY_FLUSH_TIMEOUT",
        "OMNII_OBS_TRACING",
        "OMNII_OBS_TRACES_CONSOLE",
        "OMNII_OBS_SHUTDOWN_TIMEOUT",
        "OMNII_OBS_USE_APP_PROVIDER",
        "OMNII_OBS_EXPORT_TIMEOUT",
    }
)


_ALLOWED: dict[Callable[[str], object], str] = {
    _dsn: "a Sentry DSN like https://<key>@<host>/<project-id>",
    _url: "a URL like http://host:4317",
}


class _EnvReader:
    """Reads variables one by one, collecting every problem before raising."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[tuple[str, str, str]] = []
        self.unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in KNOWN_PREFIXED)

    def get(self, name: str, parse: Callable[[str], _T], default: _T) -> _T:
        raw = self.environ.get(name, "")
        if raw == "":
            return default
        try:
            try:
                return parse(raw)
            except _Invalid:
                raise
            except (ValueError, OverflowError) as exc:  # e.g. urlsplit on "http://[::1"
                raise _Invalid(_ALLOWED.get(parse, "a valid value")) from exc
        except _Invalid as exc:
            shown = "***" if name in ("SENTRY_DSN", "OTEL_EXPORTER_OTLP_HEADERS") else raw
            self.problems.append((name, shown, str(exc)))
            return default

    def read(self) -> ObservabilityConfig:
        get = self.get
        sentry_defaults, tracing_defaults = SentryConfig(), TracingConfig()
        metrics_defaults, latency_defaults = MetricsConfig(), LatencyConfig()
        traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _url, None)
        generic_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT", _url, None)
        metrics_endpoint = get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", _url, None)
        endpoint = traces_endpoint or generic_endpoint
        # Validated here so a typo fails at start-up; the SDK reads them itself.
        get("OTEL_TRACES_SAMPLER", _sampler, "")
        get("OTEL_TRACES_SAMPLER_ARG", _float(0.0, 1.0), 0.0)
        for bsp in ("SCHEDULE_DELAY", "EXPORT_TIMEOUT"):
            get(f"OTEL_BSP_{bsp}", _positive_int, 0)
        queue = get("OTEL_BSP_MAX_QUEUE_SIZE", _positive_int, 0)
        batch = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _positive_int, 0)
        if (queue or batch) and (batch or 512) > (queue or 2048):
            name = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" if batch else "OTEL_BSP_MAX_QUEUE_SIZE"
            self.problems.append(
                (name, self.environ[name], f"batch size ({batch or 512}) at most the queue size ({queue or 2048})")
            )

        config = ObservabilityConfig(
            environment=get("APP_ENV", _label, "development"),
            version=get("APP_VERSION", _label, "1.0.0"),
            service_name=get("OTEL_SERVICE_NAME", _label, "omnii-mcp"),
            latency=LatencyConfig(
                enabled=get("OMNII_OBS_LATENCY", _bool, latency_defaults.enabled),
                exclude_paths=get("OMNII_OBS_EXCLUDE_PATHS", _paths, latency_defaults.exclude_paths),
                opt_key=get("OMNII_OBS_OPT_KEY", _label, latency_defaults.opt_key),
                unmatched_route=get("OMNII_OBS_UNMATCHED_ROUTE", _label, latency_defaults.unmatched_route),
            ),
            metrics=MetricsConfig(
                sink=get("OMNII_OBS_METRICS_SINK", _sink, metrics_defaults.sink),
                max_queue=get("OMNII_OBS_METRICS_MAX_QUEUE", _positive_int, metrics_defaults.max_queue),
                flush_interval=get(
                    "OMNII_OBS_METRICS_FLUSH_INTERVAL", _float(0.001, 60.0), metrics_defaults.flush_interval
                ),
            ),
            sentry=SentryConfig(
                dsn=get("SENTRY_DSN", _dsn, None),
                environment=get("SENTRY_ENVIRONMENT", _label, None),
                release=get("SENTRY_RELEASE", _label, None),
                traces_sample_rate=get("SENTRY_TRACES_SAMPLE_RATE", _float(0.0, 1.0), None),
                ignore_errors=get("OMNII_OBS_SENTRY_IGNORE_ERRORS", _names, sentry_defaults.ignore_errors),
                capture_status_codes=get(
                    "OMNII_OBS_SENTRY_CAPTURE_STATUS", _status_codes, sentry_defaults.capture_status_codes
                ),
                scrub_keys=get("OMNII_OBS_SENTRY_SCRUB_KEYS", _keys, sentry_defaults.scrub_keys),
                send_default_pii=get("OMNII_OBS_SENTRY_SEND_PII", _bool, sentry_defaults.send_default_pii),
                flush_timeout=get("OMNII_OBS_SENTRY_FLUSH_TIMEOUT", _float(0.0, 60.0), sentry_defaults.flush_timeout),
            ),
            tracing=TracingConfig(
                enabled=get("OMNII_OBS_TRACING", _bool, tracing_defaults.enabled),
                otlp_endpoint=endpoint,
                otlp_metrics_endpoint=metrics_endpoint if metrics_endpoint != endpoint else None,
                otlp_headers=get("OTEL_EXPORTER_OTLP_HEADERS", _headers, ()),
                console=get("OMNII_OBS_TRACES_CONSOLE", _bool, tracing_defaults.console),
                shutdown_timeout=get(
                    "OMNII_OBS_SHUTDOWN_TIMEOUT", _float(0.0, 120.0), tracing_defaults.shutdown_timeout
                ),
                export_timeout=get("OMNII_OBS_EXPORT_TIMEOUT", _float(0.1, 60.0), tracing_defaults.export_timeout),
                use_global_provider=get("OMNII_OBS_USE_APP_PROVIDER", _bool, tracing_defaults.use_global_provider),
            ),
        )
        if self.problems:
            raise ConfigError(self.problems)
        if self.unknown:
            _logger.warning(
                "ignoring unknown variable(s) %s; known %s* variables are: %s",
                ", ".join(self.unknown),
                ENV_PREFIX,
                ", ".join(sorted(KNOWN_PREFIXED)),
            )
        return config
