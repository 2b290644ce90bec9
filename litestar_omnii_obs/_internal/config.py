"""Typed configuration, read from code or from the environment.

Every option lives on a frozen :class:`msgspec.Struct` with a documented default. The
config is the whole truth: the plugin hands every value to the SDKs explicitly, so a
config built in code or by ``from_env(mapping)`` is never overridden by ``os.environ``.
:meth:`ObservabilityConfig.from_env` reads the variables of :data:`litestar_omnii_obs._internal.env.VARIABLES`
(one table: name, field, parser, what is allowed, secret or not), validates all of them
and raises one :class:`ConfigError` naming every bad variable, its value (secrets
redacted) and what is allowed. As in the OpenTelemetry specification, a variable set to
the empty string is treated as unset.

Secrets (the Sentry DSN's key, URL passwords, OTLP header values) never appear in
``repr()``/``str()`` or in error messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec.structs import force_setattr

from litestar_omnii_obs._internal.records import API_LATENCY_LINE_KEYS

__all__ = [
    "ConfigError",
    "LatencyConfig",
    "MetricsConfig",
    "ObservabilityConfig",
    "SentryConfig",
    "TracingConfig",
]

Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
OtlpProtocol = Literal["grpc", "http/protobuf"]
OtlpCompression = Literal["none", "gzip"]
SentryTraces = Literal["otlp", "sdk", "off"]
TracesExporter = Literal["otlp", "console", "none"]
OtlpExporter = Literal["otlp", "none"]
MetricsTemporality = Literal["cumulative", "delta", "lowmemory"]
HistogramAggregation = Literal["explicit_bucket_histogram", "base2_exponential_bucket_histogram"]
#: The environments the package knows; any other ``APP_ENV`` is treated as not production (one start-up warning).
KNOWN_ENVIRONMENTS = ("production", "development", "test", "staging")
#: OpenTelemetry's service name when none is set (``OTEL_SERVICE_NAME`` unset).
DEFAULT_SERVICE_NAME = "unknown_service"


class SamplingContext(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ObservabilityConfig.traces_sampler`` knows of a request when it decides its trace."""

    route: str | None
    """The route template (``/users/{user_id}``); ``None`` when no route matched (404, 405)."""
    method: str
    """The HTTP method (``_OTHER`` for one the conventions do not know)."""
    parent_sampled: bool | None
    """The caller's decision from ``traceparent``; ``None`` when the request starts a trace."""
    headers: Mapping[str, str]
    """The request's headers, names in lower case."""


#: Decides one request's trace: a rate in [0, 1] applied to the trace id, or a bool.
TracesSampler = Callable[[SamplingContext], float | bool]
#: Attributes for the span, the Sentry event and the line, from the request (after guards and authentication).
Enricher = Callable[[Any], Mapping[str, str | int | float | bool]]
if TYPE_CHECKING:
    from litestar_omnii_obs._internal._compat import Event, Hint

    #: A Sentry ``before_send`` / ``before_send_transaction`` hook: the event, changed, or ``None`` to drop it.
    SentryHook = Callable[[Event, Hint], Event | None]
else:  # sentry-sdk's Event and Hint exist for type checkers only; msgspec sees the same shape at runtime
    SentryHook = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]


class ConfigError(ValueError):
    """Raised when configuration values are invalid; lists every problem at once.

    Each problem is ``(name, value as shown, what is allowed)``; secret values are
    already redacted in ``value``.
    """

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        lines = [f"  {name}={value!r}: {allowed}" for name, value, allowed in problems]
        super().__init__("invalid observability configuration:\n" + "\n".join(lines))


def redact_url(url: str | None) -> str | None:
    """The URL with its user-info part (a Sentry DSN's key, a password) and query values shown as ``***``.

    Text that does not parse as a URL but contains ``@`` is cut to what follows the last
    ``@``, so a credential can never be printed through this function.
    """
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***@" + url.rsplit("@", 1)[1] if "@" in url else url
    if parts.query:
        hidden = "&".join(f"{item.partition('=')[0]}=***" for item in parts.query.split("&") if item)
        parts = parts._replace(query=hidden)
    if "@" not in parts.netloc:
        if "@" in parts.geturl():  # an "@" the parser did not take as user-info
            return "***@" + parts.geturl().rsplit("@", 1)[1]
        return parts.geturl()
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{host}").geturl()


def redacted_repr(config: msgspec.Struct, section: str) -> str:
    """``Name(field=value, ...)`` over every field, secrets hidden by the variable table's rule for each.

    One rule for every config struct (``repr()``, ``str()``, logs): a URL shows without its
    credentials, a header keeps its name and hides its value, any other secret is ``***``.
    """
    from litestar_omnii_obs._internal.env import BY_FIELD, display_value  # the table imports this module

    shown: list[str] = []
    for name in config.__struct_fields__:
        value = getattr(config, name)
        var = BY_FIELD.get(f"{section}.{name}")
        secret = var.secret if var is not None and value is not None else ""  # nothing to hide in None
        if secret == "url":
            value = redact_url(value)
        elif secret:
            value = tuple((key, "***") for key, _ in value) if isinstance(value, tuple) else "***"
        elif isinstance(value, frozenset):  # status codes: as ranges ("500-599"), as the variable takes them
            value = display_value(f"{section}.{name}", value)
        shown.append(f"{name}={value!r}")
    return f"{type(config).__name__}({', '.join(shown)})"


class SentryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Error reporting to Sentry. ``dsn=None`` turns it off (with one warning)."""

    dsn: str | None = None
    """Project DSN (``SENTRY_DSN``). Unset: Sentry is off, the app runs normally."""
    environment: str | None = None
    """``SENTRY_ENVIRONMENT``; ``None`` means the top-level ``environment`` (``APP_ENV``)."""
    release: str | None = None
    """``SENTRY_RELEASE``; ``None`` means the top-level ``version`` (``APP_VERSION``), and with neither
    set, sentry-sdk's own default (its ``SENTRY_RELEASE``, the git commit, a platform's variable)."""
    traces_sample_rate: float | None = None
    """``SENTRY_TRACES_SAMPLE_RATE`` in [0, 1]; ``None``: 0.1 in production, else 1.0.

    Also the default trace sampling ratio when ``tracing.sampler`` is unset, and the
    share of traces (chosen by trace id) whose spans go to Sentry."""
    traces: SentryTraces = "otlp"
    """How Sentry gets performance data (``OMNII_OBS_SENTRY_TRACES``).

    ``otlp``: the spans already exported go to Sentry's OTLP traces endpoint too (cheap);
    ``sdk``: sentry-sdk's OpenTelemetry span processor, for Sentry servers without OTLP
    ingestion (costly); ``off``: errors only."""
    ignore_errors: tuple[str, ...] = ("asyncio.CancelledError", "ConnectionError", "TimeoutError")
    """Exception types never reported, by (qualified) name (``OMNII_OBS_SENTRY_IGNORE_ERRORS``)."""
    capture_status_codes: frozenset[int] = frozenset(range(500, 600))
    """Response statuses whose exception is reported (``OMNII_OBS_SENTRY_CAPTURE_STATUS``, e.g. ``500-599``)."""
    scrub_keys: tuple[str, ...] = ()
    """Extra keys scrubbed from events, beyond the built-in denylist (``OMNII_OBS_SENTRY_SCRUB_KEYS``)."""
    send_default_pii: bool = False
    """Let sentry-sdk attach IPs, cookies and request-derived user data (``OMNII_OBS_SENTRY_SEND_PII``)."""
    flush_timeout: float = 5.0
    """Seconds the shutdown waits for queued events (``OMNII_OBS_SENTRY_FLUSH_TIMEOUT``)."""
    before_send: SentryHook | None = None
    """Your ``before_send`` (code only): runs after sentry-sdk's processors and the plugin's scrubbing,
    before a last scrub pass; returning ``None`` drops the event. ``None``: the one given to
    ``sentry_sdk.init``, if any. If it raises, the error is logged once and the event is sent, scrubbed."""
    before_send_transaction: SentryHook | None = None
    """The same for transactions (``traces="sdk"`` only); ``None``: the one given to ``sentry_sdk.init``."""

    def __post_init__(self) -> None:
        if self.traces_sample_rate is not None and not 0.0 <= self.traces_sample_rate <= 1.0:
            raise ConfigError([("traces_sample_rate", str(self.traces_sample_rate), "a number in [0, 1]")])
        for name in ("before_send", "before_send_transaction"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ConfigError([(name, repr(getattr(self, name)), "a function (event, hint) -> event or None")])

    def __repr__(self) -> str:
        return redacted_repr(self, "sentry")

    __str__ = __repr__


class TracingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """OpenTelemetry tracing; the ``OTEL_*`` variables keep their spec meaning.

    Every value is handed to the SDK explicitly: sampler, resource attributes and batch
    sizes here win over anything in ``os.environ``.
    """

    enabled: bool = True
    """Create a server span per request (``OMNII_OBS_TRACING``)."""
    sdk_disabled: bool = False
    """``OTEL_SDK_DISABLED``: no spans and no OTLP export (latency records and Sentry errors stay)."""
    otlp_endpoint: str | None = None
    """Base OTLP endpoint for every signal (``OTEL_EXPORTER_OTLP_ENDPOINT``); unset means no export.

    Over ``http/protobuf`` the signal's path (``/v1/traces``, ``/v1/metrics``) is appended."""
    otlp_traces_endpoint: str | None = None
    """Traces endpoint used as is (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``None``: ``otlp_endpoint``."""
    otlp_metrics_endpoint: str | None = None
    """Metrics endpoint used as is (``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``); ``None``: ``otlp_endpoint``."""
    otlp_protocol: OtlpProtocol = "http/protobuf"
    """``http/protobuf`` (the OTLP default, port 4318) or ``grpc`` (port 4317, the ``grpc`` extra)
    (``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
    otlp_traces_protocol: OtlpProtocol | None = None
    """Protocol for traces (``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``); ``None``: ``otlp_protocol``."""
    otlp_metrics_protocol: OtlpProtocol | None = None
    """Protocol for metrics (``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``); ``None``: ``otlp_protocol``."""
    otlp_compression: OtlpCompression = "none"
    """``none`` (the OTLP exporters' default) or ``gzip`` (``OTEL_EXPORTER_OTLP_COMPRESSION``): gzip costs the
    export thread CPU (about 0.4 ms per 512 spans here) for about a ninth of the bytes on the wire."""
    otlp_traces_compression: OtlpCompression | None = None
    """``OTEL_EXPORTER_OTLP_TRACES_COMPRESSION``; ``None``: ``otlp_compression``."""
    otlp_metrics_compression: OtlpCompression | None = None
    """``OTEL_EXPORTER_OTLP_METRICS_COMPRESSION``; ``None``: ``otlp_compression``."""
    otlp_headers: tuple[tuple[str, str], ...] = ()
    """Headers sent to the collector (``OTEL_EXPORTER_OTLP_HEADERS``); values are never printed."""
    sampler: Sampler | None = None
    """``OTEL_TRACES_SAMPLER``; ``None``: parent-based trace-id ratio at the Sentry traces rate."""
    sampler_arg: float | None = None
    """Ratio for the ``*traceidratio`` samplers (``OTEL_TRACES_SAMPLER_ARG``); ``None``: 1.0."""
    resource_attributes: tuple[tuple[str, str], ...] = ()
    """Extra resource attributes (``OTEL_RESOURCE_ATTRIBUTES``); service name, version and environment win."""
    bsp_schedule_delay: int = 5000
    """Milliseconds between span batches (``OTEL_BSP_SCHEDULE_DELAY``)."""
    bsp_export_timeout: int = 30000
    """Milliseconds one batch export may take (``OTEL_BSP_EXPORT_TIMEOUT``)."""
    bsp_max_queue_size: int = 2048
    """Spans held for export; beyond it spans are dropped and counted (``OTEL_BSP_MAX_QUEUE_SIZE``)."""
    bsp_max_export_batch_size: int = 512
    """Spans per export, at most the queue size (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``)."""
    console: bool = False
    """With no endpoint, print finished spans to stderr instead (``OMNII_OBS_TRACES_CONSOLE``).

    ``console`` in ``traces_exporter`` sets it too."""
    traces_exporter: tuple[TracesExporter, ...] = ("otlp",)
    """``OTEL_TRACES_EXPORTER``: ``otlp`` sends spans to the traces endpoint; ``none`` sends none there
    (trace ids and ``X-Request-ID`` stay; Sentry's OTLP endpoint still gets its share); ``console``
    prints them to stderr when they do not go to a collector (as ``console=True``)."""
    metrics_temporality: MetricsTemporality = "cumulative"
    """``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``, as the SDK's OTLP exporters read it: ``delta``
    and ``lowmemory`` export the SDK's counters and histograms as deltas (an export that fails then loses
    them, counted); ``http.server.request.duration`` stays cumulative."""
    metrics_histogram_aggregation: HistogramAggregation = "explicit_bucket_histogram"
    """``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`` for the SDK's histograms (the request
    durations always use the semantic-convention buckets)."""
    metrics_exporter: tuple[OtlpExporter, ...] = ("otlp",)
    """``OTEL_METRICS_EXPORTER``: ``otlp`` exports metrics to the metrics endpoint; ``none`` builds no
    metric exporter at all (no ``MeterProvider``, no export, no export warnings)."""
    logs_exporter: tuple[OtlpExporter, ...] = ("otlp",)
    """``OTEL_LOGS_EXPORTER``: accepted (``otlp`` or ``none``) and ignored: the package exports no logs."""
    shutdown_timeout: float = 5.0
    """Seconds the shutdown may spend flushing spans (``OMNII_OBS_SHUTDOWN_TIMEOUT``)."""
    export_timeout: float = 5.0
    """Seconds one OTLP export may take (``OMNII_OBS_EXPORT_TIMEOUT``)."""
    use_app_provider: bool = True
    """If the app already installed its own SDK ``TracerProvider``, use it (``OMNII_OBS_USE_APP_PROVIDER``)."""
    trusted_proxies: tuple[str, ...] = ()
    """Immediate clients (IP addresses, CIDR networks, or ``*``) whose ``Forwarded`` and ``X-Forwarded-*``
    headers set a span's ``server.address``, ``url.scheme`` and ``client.address``
    (``OMNII_OBS_FORWARDED_ALLOW_IPS``, uvicorn's ``--forwarded-allow-ips`` model). Empty: ``Host`` and the
    socket only, since any client could send those headers."""
    set_global_provider: bool = True
    """Route OpenTelemetry's global tracer to this app's provider so user spans nest under the request span."""
    keep_statuses: frozenset[int] = frozenset(range(500, 600))
    """A request the sampler dropped that ends with one of these statuses still has its server span
    recorded and exported, marked ``omnii.kept=status`` (``OMNII_OBS_KEEP_STATUSES``; ``none``: never)."""
    keep_slower_than_ms: float | None = None
    """A request the sampler dropped that took longer still has its server span, marked
    ``omnii.kept=slow`` (``OMNII_OBS_KEEP_SLOWER_THAN_MS``); ``None``: off."""
    capture_request_headers: tuple[str, ...] = ()
    """Request headers put on recorded server spans as ``http.request.header.<name>``: names or regular
    expressions matching the whole name, any case (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``)."""
    capture_response_headers: tuple[str, ...] = ()
    """The same for response headers, as ``http.response.header.<name>``
    (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE``)."""
    sanitize_headers: tuple[str, ...] = ()
    """Captured headers whose values become ``[REDACTED]``: regular expressions found anywhere in the name,
    any case (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``). Secret-looking names always are."""

    def __post_init__(self) -> None:
        from litestar_omnii_obs._internal.headers import check_patterns  # headers.py imports this module

        check_patterns(self)
        from litestar_omnii_obs._internal.attributes import check_trusted_proxies

        try:
            check_trusted_proxies(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError([("trusted_proxies", ",".join(self.trusted_proxies), str(exc))]) from None
        for name, exporters in (
            ("traces_exporter", self.traces_exporter),
            ("metrics_exporter", self.metrics_exporter),
            ("logs_exporter", self.logs_exporter),
        ):
            if not exporters or ("none" in exporters and len(exporters) > 1):
                raise ConfigError([(name, ",".join(exporters), "'none' alone, or a non-empty list of exporters")])
        if "console" in self.traces_exporter and not self.console:
            force_setattr(self, "console", True)
        if self.bsp_max_export_batch_size > self.bsp_max_queue_size:
            raise ConfigError(
                [
                    (
                        "bsp_max_export_batch_size",
                        str(self.bsp_max_export_batch_size),
                        f"at most bsp_max_queue_size ({self.bsp_max_queue_size})",
                    )
                ]
            )

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans go: the signal-specific endpoint, else the base one (``None`` without ``otlp`` exporter)."""
        if "otlp" not in self.traces_exporter:
            return None
        return self.otlp_traces_endpoint or self.otlp_endpoint

    @property
    def traces_protocol(self) -> OtlpProtocol:
        """The protocol spans go over: ``otlp_traces_protocol``, else ``otlp_protocol``."""
        return self.otlp_traces_protocol or self.otlp_protocol

    @property
    def metrics_protocol(self) -> OtlpProtocol:
        """The protocol metrics go over: ``otlp_metrics_protocol``, else ``otlp_protocol``."""
        return self.otlp_metrics_protocol or self.otlp_protocol

    @property
    def traces_compression(self) -> OtlpCompression:
        return self.otlp_traces_compression or self.otlp_compression

    @property
    def metrics_compression(self) -> OtlpCompression:
        return self.otlp_metrics_compression or self.otlp_compression

    @property
    def metrics_endpoint(self) -> str | None:
        """Where OTLP metrics go: the signal-specific endpoint, else the base one (``None`` with exporter ``none``)."""
        if "otlp" not in self.metrics_exporter:
            return None
        return self.otlp_metrics_endpoint or self.otlp_endpoint

    def __repr__(self) -> str:
        return redacted_repr(self, "tracing")

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
    shutdown_timeout: float = 5.0
    """Seconds the shutdown waits for the last lines to be written (``OMNII_OBS_METRICS_SHUTDOWN_TIMEOUT``).

    A sink that blocks (a pipe nobody reads) cannot hold the shutdown longer; lines not
    written by then are reported as lost."""


class LatencyConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Per-route ``api_latency`` records."""

    enabled: bool = True
    """Record ``api_latency`` for every request (``OMNII_OBS_LATENCY``)."""
    exclude_paths: tuple[str, ...] = ("/health",)
    """Paths with no record and no span: exact, or a prefix when ending in ``*`` (``OMNII_OBS_EXCLUDE_PATHS``)."""
    opt_key: str = "observability"
    """The handler ``opt`` key of the per-route policy (``OMNII_OBS_OPT_KEY``): ``False`` observes nothing;
    a mapping sets ``traces``, ``latency``, ``metrics``, ``sentry_statuses`` (see README "Choosing what to observe")."""
    exclude_routes: tuple[str, ...] = ()
    """Route templates observed not at all, as ``opt={opt_key: False}`` (``OMNII_OBS_EXCLUDE_ROUTES``)."""
    line_attributes: tuple[str, ...] = ()
    """Keys of ``ObservabilityConfig.enrich``'s result also written on the ``api_latency`` line
    (``OMNII_OBS_LINE_ATTRIBUTES``)."""
    unmatched_route: str = "UNMATCHED"
    """Route label for requests no route matched, e.g. 404 and 405 (``OMNII_OBS_UNMATCHED_ROUTE``)."""
    log_server_errors: bool = True
    """Log each exception that becomes a 5xx once at ERROR with its traceback (``OMNII_OBS_LOG_ERRORS``).

    Litestar itself logs exceptions only in debug mode."""

    def __post_init__(self) -> None:
        taken = sorted(API_LATENCY_LINE_KEYS.intersection(self.line_attributes))
        if taken:
            allowed = "names other than the line's own fields (" + ", ".join(sorted(API_LATENCY_LINE_KEYS)) + ")"
            raise ConfigError([("latency.line_attributes", ",".join(taken), allowed)])


class ObservabilityConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the plugin does, in one value. Build it in code or with :meth:`from_env`."""

    environment: str = "development"
    """Deployment environment (``APP_ENV``): ``production``, ``development``, ``test`` or ``staging``.

    Only ``production`` changes a default (10% trace sampling instead of 100%); any other value
    is used as the label as is, with one warning at start-up."""
    version: str | None = None
    """Service version (``APP_VERSION``): the resource's ``service.version`` and Sentry's release when
    ``sentry.release`` is unset. ``None``: no ``service.version`` (unless ``OTEL_RESOURCE_ATTRIBUTES``
    names one), and sentry-sdk's own default release (``SENTRY_RELEASE``, else the git commit it finds)."""
    service_name: str = DEFAULT_SERVICE_NAME
    """Service name on metric lines, spans and metrics (``OTEL_SERVICE_NAME``). Left at OpenTelemetry's
    default ``unknown_service``, a ``service.name`` in ``tracing.resource_attributes`` is used instead."""
    latency: LatencyConfig = msgspec.field(default_factory=LatencyConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    sentry: SentryConfig = msgspec.field(default_factory=SentryConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    traces_sampler: TracesSampler | None = None
    """Decides each request's trace from its route (a :class:`~litestar_omnii_obs.SamplingContext`):
    returns a rate in [0, 1] (applied to the trace id) or a bool. Routes whose ``opt`` sets ``traces``
    are not asked. ``None``: the configured sampler (``OTEL_TRACES_SAMPLER``)."""
    freeze_gc: bool = True
    """At the end of the first app start-up in the process, move every object that exists then (modules,
    the app) out of the garbage collector's reach with ``gc.freeze()`` (``OMNII_OBS_FREEZE_GC``).

    Why: a full collection walks every tracked object; with sentry-sdk, gRPC and OpenTelemetry loaded a
    worker has several hundred thousand, so each full collection paused the event loop 20-50 ms (uvicorn,
    ``gc.callbacks``), and the first came a few seconds into traffic. Frozen, a full collection walks only
    what was made since: about 1 ms. What was garbage at start-up and only collectable by the collector
    (reference cycles) stays in memory. Once per process; ``False`` leaves the collector alone."""
    enrich: Enricher | None = None
    """Called once per request after guards and authentication, with the request; what it returns goes
    on the server span, the Sentry event (tags; ``user.id`` as the user when PII is allowed) and, for
    ``latency.line_attributes``, on the line. Never overwrites what the app set."""

    def __post_init__(self) -> None:
        # OpenTelemetry's precedence: OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES.
        if self.service_name == DEFAULT_SERVICE_NAME:
            named = dict(self.tracing.resource_attributes).get("service.name")
            if named:
                force_setattr(self, "service_name", named)

    @property
    def sentry_traces_sample_rate(self) -> float:
        """The effective Sentry rate: explicit, else 0.1 in production and 1.0 elsewhere."""
        if self.sentry.traces_sample_rate is not None:
            return self.sentry.traces_sample_rate
        return 0.1 if self.environment == "production" else 1.0

    @property
    def tracing_active(self) -> bool:
        """Whether requests get spans at all (tracing on and the OpenTelemetry SDK not disabled)."""
        return self.tracing.enabled and not self.tracing.sdk_disabled

    def environment_warning(self) -> str | None:
        """What an ``environment`` outside :data:`KNOWN_ENVIRONMENTS` selects, as a start-up warning; else ``None``."""
        if self.environment in KNOWN_ENVIRONMENTS:
            return None
        if self.sentry.traces_sample_rate is None:
            effect = "traces are sampled at 100% by default (production: 10%; SENTRY_TRACES_SAMPLE_RATE is unset)"
        else:
            effect = f"trace sampling follows SENTRY_TRACES_SAMPLE_RATE={self.sentry.traces_sample_rate}"
        return (
            f"APP_ENV={self.environment!r} is not one of {', '.join(KNOWN_ENVIRONMENTS)}; it is treated as a "
            f"non-production environment: {effect}. It is still the environment label of metric lines, spans "
            "and Sentry events. If this is production, set APP_ENV=production."
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **fields: Any) -> ObservabilityConfig:
        """Read the configuration from ``environ`` (default ``os.environ``); ``fields`` replace what it gives.

        With a mapping, the mapping is the whole truth: ``os.environ`` is not read. ``fields`` are
        top-level fields, e.g. ``from_env(traces_sampler=by_route, enrich=add_tenant)``; a mapping for a
        section replaces only those keys of it, e.g. ``from_env(sentry={"before_send": hook})`` keeps the
        environment's DSN and rates (a whole ``SentryConfig`` replaces the section).

        Raises:
            ConfigError: listing every invalid variable, its value (secrets redacted) and what is allowed.
        """
        from litestar_omnii_obs._internal.env import read_environ

        config = read_environ(os.environ if environ is None else environ)[0]
        for name, value in fields.items():
            section = getattr(config, name, None)
            if isinstance(value, Mapping) and isinstance(section, msgspec.Struct):
                fields[name] = msgspec.structs.replace(section, **value)
        return msgspec.structs.replace(config, **fields) if fields else config
