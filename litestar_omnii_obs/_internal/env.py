"""The one table of environment variables, and the reader built on it.

Each :class:`EnvVar` says which config field a variable sets, how its text is parsed,
what is allowed (shown in :class:`~litestar_omnii_obs._internal.config.ConfigError`) and whether
its value is secret. ``from_env``, the unknown-variable warning, ``litestar obs config``
and every redaction read this table, so they cannot drift apart.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

import msgspec

from litestar_omnii_obs._internal.attributes import check_trusted_proxies
from litestar_omnii_obs._internal.config import (
    ConfigError,
    HistogramAggregation,
    MetricsTemporality,
    ObservabilityConfig,
    OtlpCompression,
    OtlpExporter,
    OtlpProtocol,
    Sampler,
    SentryTraces,
    TracesExporter,
    redact_url,
)
from litestar_omnii_obs._internal.records import API_LATENCY_LINE_KEYS

__all__ = ["ENV_PREFIX", "VARIABLES", "EnvVar", "display_value", "read_environ"]

_logger = logging.getLogger("litestar_omnii_obs")

#: Prefix of this package's own variables; unknown names with it are warned about.
ENV_PREFIX = "OMNII_OBS_"

_MAX_INT = 2**31 - 1
_HEADER_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_."

Secret = Literal["", "url", "value"]


class _Invalid(Exception):
    """A value failed to parse."""


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: the field it sets, its parser, what is allowed, how secret it is."""

    name: str
    field: str
    """Dotted path in :class:`ObservabilityConfig`, e.g. ``tracing.otlp_endpoint``."""
    parse: Callable[[str], Any]
    allowed: str
    secret: Secret = ""
    """``url``: the user-info part is hidden; ``value``: the whole value is hidden."""

    def shown(self, raw: str) -> str:
        """``raw`` as it may be printed."""
        if self.secret == "value":
            return "***"
        if self.secret == "url":
            return redact_url(raw) or ""
        return raw


# --------------------------------------------------------------------------- parsers


def _label(value: str) -> str:
    if not value.strip() or any(c.isspace() or not c.isprintable() for c in value) or len(value) > 200:
        raise _Invalid
    return value


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise _Invalid from None
        if math.isnan(number) or not low <= number <= high:
            raise _Invalid
        return number

    return parse


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _Invalid from None
    if not 0 < number <= _MAX_INT:
        raise _Invalid
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _Invalid


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise _Invalid
        return value

    return parse


def _lower_choice(*choices: str) -> Callable[[str], str]:
    """One of ``choices``, in any case (as the SDK reads ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``)."""
    exact = _choice(*choices)
    return lambda value: exact(value.strip().lower())


def _exporters(*choices: str) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of exporter names, as ``OTEL_*_EXPORTER`` (case-insensitive; ``none`` alone)."""

    def parse(value: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
        if not names or any(n not in choices for n in names) or ("none" in names and len(names) > 1):
            raise _Invalid
        return names

    return parse


def _dsn(value: str) -> str:
    parts = urlsplit(value)
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.username or not project.isdigit():
        raise _Invalid
    from sentry_sdk.utils import Dsn  # here: sentry-sdk loads only when a DSN is set (issue 22)

    try:
        _ = parts.port
        Dsn(value)
    except ValueError:  # sentry-sdk's BadDsn is a ValueError
        raise _Invalid from None
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    _ = parts.port  # ValueError for a bad port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid
    return value


def _pairs(lower_keys: bool) -> Callable[[str], tuple[tuple[str, str], ...]]:
    def parse(value: str) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            name, text = unquote(key.strip()), unquote(val.strip())
            if lower_keys:
                name = name.lower()
                if name.strip(_HEADER_NAME_CHARS):
                    raise _Invalid
            if not sep or not name or not (text.isascii() and text.isprintable()):
                raise _Invalid
            pairs.append((name, text))
        return tuple(pairs)

    return parse


def _paths(value: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in value.split(",") if p.strip())
    if not paths or any(not p.startswith("/") or "*" in p[:-1] for p in paths):
        raise _Invalid
    return paths


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names or any(not all(part.isidentifier() for part in n.split(".")) for n in names):
        raise _Invalid
    return names


def _line_attributes(value: str) -> tuple[str, ...]:
    names = _names(value)
    if API_LATENCY_LINE_KEYS.intersection(names):
        raise _Invalid
    return names


def _header_patterns(value: str) -> tuple[str, ...]:
    """Comma-separated header names or regular expressions, as OpenTelemetry's instrumentations read them."""
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    if not patterns:
        raise _Invalid
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error:
            raise _Invalid from None
    return patterns


def _keys(value: str) -> tuple[str, ...]:
    keys = tuple(k.strip().lower() for k in value.split(",") if k.strip())
    if not keys:
        raise _Invalid
    return keys


def _status_codes(value: str) -> frozenset[int]:
    codes: set[int] = set()
    try:
        for item in value.split(","):
            low, dash, high = item.strip().partition("-")
            start, end = int(low), int(high if dash else low)
            if not 100 <= start <= end <= 599:
                raise _Invalid
            codes.update(range(start, end + 1))
    except ValueError:
        raise _Invalid from None
    return frozenset(codes)


def _status_codes_or_none(value: str) -> frozenset[int]:
    return frozenset() if value.strip().lower() == "none" else _status_codes(value)


def _templates(value: str) -> tuple[str, ...]:
    templates = tuple(t.strip() for t in value.split(",") if t.strip())
    if not templates or any(not t.startswith("/") or "*" in t for t in templates):
        raise _Invalid
    return templates


def _proxies(value: str) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    if not entries:
        raise _Invalid
    check_trusted_proxies(entries)  # ValueError: invalid
    return entries


def _sink(value: str) -> str:
    if value in ("stdout", "stderr", "off"):
        return value
    if not value.strip() or value != value.strip() or "\x00" in value:
        raise _Invalid
    directory = os.path.dirname(os.path.abspath(value))
    if os.path.isdir(value) or not os.path.isdir(directory):
        raise _Invalid
    return value


_SAMPLERS: tuple[str, ...] = get_args(Sampler)
_PROTOCOLS: tuple[str, ...] = get_args(OtlpProtocol)
_SENTRY_TRACES: tuple[str, ...] = get_args(SentryTraces)
_TRACES_EXPORTERS: tuple[str, ...] = get_args(TracesExporter)
_OTLP_EXPORTERS: tuple[str, ...] = get_args(OtlpExporter)

_LABEL = "a non-blank label of at most 200 printable characters, without spaces"
_BOOL = "one of true, false, 1, 0, yes, no, on, off"
_URL = "a URL like http://host:4317"
_PROTOCOL = "one of grpc, http/protobuf"
_COMPRESSIONS: tuple[str, ...] = get_args(OtlpCompression)
_COMPRESSION = "one of none, gzip (any case)"
_MS = f"a positive integer (milliseconds) up to {_MAX_INT}"
_COUNT = f"a positive integer up to {_MAX_INT}"


def _seconds(low: float, high: float) -> tuple[Callable[[str], float], str]:
    return _float(low, high), f"a number in [{low}, {high}] (seconds)"


#: Every variable the package reads, in precedence order where two set one field (first set wins).
VARIABLES: tuple[EnvVar, ...] = (
    EnvVar("APP_ENV", "environment", _label, _LABEL),
    EnvVar("APP_VERSION", "version", _label, _LABEL),
    EnvVar("OTEL_SERVICE_NAME", "service_name", _label, _LABEL),
    EnvVar("OMNII_OBS_FREEZE_GC", "freeze_gc", _bool, _BOOL),
    EnvVar("OMNII_OBS_LATENCY", "latency.enabled", _bool, _BOOL),
    EnvVar(
        "OMNII_OBS_EXCLUDE_PATHS",
        "latency.exclude_paths",
        _paths,
        "comma-separated paths starting with '/', optionally ending in '*'",
    ),
    EnvVar("OMNII_OBS_OPT_KEY", "latency.opt_key", _label, _LABEL),
    EnvVar(
        "OMNII_OBS_EXCLUDE_ROUTES",
        "latency.exclude_routes",
        _templates,
        "comma-separated route templates as Litestar prints them, e.g. /health,/users/{user_id}",
    ),
    EnvVar(
        "OMNII_OBS_LINE_ATTRIBUTES",
        "latency.line_attributes",
        _line_attributes,
        "comma-separated attribute names such as tenant,user.id, none of the line's own fields "
        f"({', '.join(sorted(API_LATENCY_LINE_KEYS))})",
    ),
    EnvVar("OMNII_OBS_UNMATCHED_ROUTE", "latency.unmatched_route", _label, _LABEL),
    EnvVar("OMNII_OBS_LOG_ERRORS", "latency.log_server_errors", _bool, _BOOL),
    EnvVar(
        "OMNII_OBS_METRICS_SINK", "metrics.sink", _sink, "stdout, stderr, off, or a file path in an existing directory"
    ),
    EnvVar("OMNII_OBS_METRICS_MAX_QUEUE", "metrics.max_queue", _positive_int, f"a positive integer up to {_MAX_INT}"),
    EnvVar("OMNII_OBS_METRICS_FLUSH_INTERVAL", "metrics.flush_interval", *_seconds(0.001, 60.0)),
    EnvVar("OMNII_OBS_METRICS_SHUTDOWN_TIMEOUT", "metrics.shutdown_timeout", *_seconds(0.0, 120.0)),
    EnvVar("SENTRY_DSN", "sentry.dsn", _dsn, "a Sentry DSN like https://<key>@<host>/<project-id>", "url"),
    EnvVar("SENTRY_ENVIRONMENT", "sentry.environment", _label, _LABEL),
    EnvVar("SENTRY_RELEASE", "sentry.release", _label, _LABEL),
    EnvVar("SENTRY_TRACES_SAMPLE_RATE", "sentry.traces_sample_rate", _float(0.0, 1.0), "a number in [0.0, 1.0]"),
    EnvVar("OMNII_OBS_SENTRY_TRACES", "sentry.traces", _choice(*_SENTRY_TRACES), "one of " + ", ".join(_SENTRY_TRACES)),
    EnvVar(
        "OMNII_OBS_SENTRY_IGNORE_ERRORS",
        "sentry.ignore_errors",
        _names,
        "comma-separated exception names such as ConnectionError,asyncio.CancelledError",
    ),
    EnvVar(
        "OMNII_OBS_SENTRY_CAPTURE_STATUS",
        "sentry.capture_status_codes",
        _status_codes,
        "comma-separated HTTP status codes or ranges within 100-599, e.g. 500-599",
    ),
    EnvVar("OMNII_OBS_SENTRY_SCRUB_KEYS", "sentry.scrub_keys", _keys, "comma-separated key names"),
    EnvVar("OMNII_OBS_SENTRY_SEND_PII", "sentry.send_default_pii", _bool, _BOOL),
    EnvVar("OMNII_OBS_SENTRY_FLUSH_TIMEOUT", "sentry.flush_timeout", *_seconds(0.0, 60.0)),
    EnvVar("OMNII_OBS_TRACING", "tracing.enabled", _bool, _BOOL),
    EnvVar("OTEL_SDK_DISABLED", "tracing.sdk_disabled", _bool, _BOOL),
    EnvVar("OTEL_EXPORTER_OTLP_ENDPOINT", "tracing.otlp_endpoint", _url, _URL, "url"),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "tracing.otlp_traces_endpoint", _url, _URL, "url"),
    EnvVar("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "tracing.otlp_metrics_endpoint", _url, _URL, "url"),
    EnvVar("OTEL_EXPORTER_OTLP_PROTOCOL", "tracing.otlp_protocol", _choice(*_PROTOCOLS), _PROTOCOL),
    EnvVar("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "tracing.otlp_traces_protocol", _choice(*_PROTOCOLS), _PROTOCOL),
    EnvVar("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "tracing.otlp_metrics_protocol", _choice(*_PROTOCOLS), _PROTOCOL),
    EnvVar("OTEL_EXPORTER_OTLP_COMPRESSION", "tracing.otlp_compression", _lower_choice(*_COMPRESSIONS), _COMPRESSION),
    EnvVar(
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "tracing.otlp_traces_compression",
        _lower_choice(*_COMPRESSIONS),
        _COMPRESSION,
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "tracing.otlp_metrics_compression",
        _lower_choice(*_COMPRESSIONS),
        _COMPRESSION,
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "tracing.metrics_temporality",
        _lower_choice(*get_args(MetricsTemporality)),
        "one of cumulative, delta, lowmemory (any case)",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        "tracing.metrics_histogram_aggregation",
        _choice(*get_args(HistogramAggregation)),
        "one of explicit_bucket_histogram, base2_exponential_bucket_histogram",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "tracing.otlp_headers",
        _pairs(lower_keys=True),
        "comma-separated key=value pairs; names of a-z 0-9 - _ . and printable ASCII values",
        "value",
    ),
    EnvVar(
        "OTEL_TRACES_EXPORTER",
        "tracing.traces_exporter",
        _exporters(*_TRACES_EXPORTERS),
        "otlp, console, otlp,console, or none (comma-separated as in the OpenTelemetry spec)",
    ),
    EnvVar("OTEL_METRICS_EXPORTER", "tracing.metrics_exporter", _exporters(*_OTLP_EXPORTERS), "otlp or none"),
    EnvVar(
        "OTEL_LOGS_EXPORTER",
        "tracing.logs_exporter",
        _exporters(*_OTLP_EXPORTERS),
        "otlp or none (either is accepted; the package exports no logs)",
    ),
    EnvVar("OTEL_TRACES_SAMPLER", "tracing.sampler", _choice(*_SAMPLERS), "one of " + ", ".join(_SAMPLERS)),
    EnvVar("OTEL_TRACES_SAMPLER_ARG", "tracing.sampler_arg", _float(0.0, 1.0), "a number in [0.0, 1.0]"),
    EnvVar(
        "OTEL_RESOURCE_ATTRIBUTES",
        "tracing.resource_attributes",
        _pairs(lower_keys=False),
        "comma-separated key=value pairs of printable ASCII",
    ),
    EnvVar(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        "tracing.capture_request_headers",
        _header_patterns,
        "comma-separated header names or regular expressions matching whole names, any case, e.g. x-tenant,x-.*",
    ),
    EnvVar(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
        "tracing.capture_response_headers",
        _header_patterns,
        "comma-separated header names or regular expressions matching whole names, any case, e.g. content-type",
    ),
    EnvVar(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
        "tracing.sanitize_headers",
        _header_patterns,
        "comma-separated header names or regular expressions found anywhere in the name, any case",
    ),
    EnvVar("OTEL_BSP_SCHEDULE_DELAY", "tracing.bsp_schedule_delay", _positive_int, _MS),
    EnvVar("OTEL_BSP_EXPORT_TIMEOUT", "tracing.bsp_export_timeout", _positive_int, _MS),
    EnvVar(
        "OTEL_BSP_MAX_QUEUE_SIZE", "tracing.bsp_max_queue_size", _positive_int, f"a positive integer up to {_MAX_INT}"
    ),
    EnvVar(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "tracing.bsp_max_export_batch_size",
        _positive_int,
        f"a positive integer up to {_MAX_INT}, at most the queue size",
    ),
    EnvVar("OMNII_OBS_TRACES_CONSOLE", "tracing.console", _bool, _BOOL),
    EnvVar("OMNII_OBS_SHUTDOWN_TIMEOUT", "tracing.shutdown_timeout", *_seconds(0.0, 120.0)),
    EnvVar("OMNII_OBS_EXPORT_TIMEOUT", "tracing.export_timeout", *_seconds(0.1, 60.0)),
    EnvVar("OMNII_OBS_USE_APP_PROVIDER", "tracing.use_app_provider", _bool, _BOOL),
    EnvVar(
        "OMNII_OBS_FORWARDED_ALLOW_IPS",
        "tracing.trusted_proxies",
        _proxies,
        "comma-separated IP addresses or CIDR networks of trusted proxies (10.0.0.0/8,127.0.0.1), or '*'",
    ),
    EnvVar(
        "OMNII_OBS_KEEP_STATUSES",
        "tracing.keep_statuses",
        _status_codes_or_none,
        "none, or comma-separated HTTP status codes or ranges within 100-599, e.g. 500-599",
    ),
    EnvVar(
        "OMNII_OBS_KEEP_SLOWER_THAN_MS",
        "tracing.keep_slower_than_ms",
        _float(0.0, 3_600_000.0),
        "a number of milliseconds in [0, 3600000]",
    ),
)

BY_NAME: dict[str, EnvVar] = {var.name: var for var in VARIABLES}
BY_FIELD: dict[str, EnvVar] = {var.field: var for var in VARIABLES}


def display_value(field: str, value: Any) -> str:
    """A config field's value as text, secrets hidden by the table's rule for that field."""
    if value is None:
        return "-"
    var = BY_FIELD.get(field)
    if var is not None and var.secret:
        return _hidden(var.secret, value)
    return _plain(value)


def _plain(value: Any) -> str:
    """A value that is no secret, as the variable would carry it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return _ranges(value)
    if isinstance(value, tuple):
        return ",".join(f"{item[0]}={item[1]}" if isinstance(item, tuple) else str(item) for item in value) or "-"
    return str(value)


def _hidden(secret: str, value: Any) -> str:
    """A secret field's value: the whole value hidden (header pairs keep their names), or a URL's credentials."""
    if secret == "url":
        return redact_url(str(value)) or "-"
    if isinstance(value, tuple):
        return ",".join(f"{item[0]}=***" for item in value) or "-"
    return "***"


def _ranges(codes: frozenset[Any]) -> str:
    spans: list[list[int]] = []
    for code in sorted(codes):
        if spans and code == spans[-1][1] + 1:
            spans[-1][1] = code
        else:
            spans.append([code, code])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"


def read_environ(environ: Mapping[str, str]) -> tuple[ObservabilityConfig, dict[str, str]]:
    """The config ``environ`` describes, and for each field set from it, the variable that set it.

    Raises:
        ConfigError: listing every invalid variable, its value (secrets redacted) and what is allowed.
    """
    values, sources, problems = _parse_all(environ)
    problems += _batch_problems(environ, values, sources)
    if problems:
        raise ConfigError(problems)
    if "console" in values.get("tracing.traces_exporter", ()):
        sources["tracing.console"] = "OTEL_TRACES_EXPORTER"  # it turns the console exporter on
    _warn_unknown(environ)
    return _build(values), sources


def _parse_all(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], list[tuple[str, str, str]]]:
    """Every variable of the table that is set: (values by field, the variable of each, the invalid ones)."""
    problems: list[tuple[str, str, str]] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for var in VARIABLES:
        raw = environ.get(var.name, "")
        if raw == "" or var.field in values:
            continue
        try:
            values[var.field] = var.parse(raw)
            sources[var.field] = var.name
        except (_Invalid, ValueError, OverflowError):
            problems.append((var.name, var.shown(raw), var.allowed))
    return values, sources, problems


def _batch_problems(
    environ: Mapping[str, str], values: Mapping[str, Any], sources: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """The one rule between two variables: an export batch no larger than the span queue."""
    queue = values.get("tracing.bsp_max_queue_size", 2048)
    batch = values.get("tracing.bsp_max_export_batch_size", 512)
    if batch <= queue:
        return []
    name = sources.get("tracing.bsp_max_export_batch_size") or sources["tracing.bsp_max_queue_size"]
    return [(name, environ[name], f"export batch size ({batch}) at most the queue size ({queue})")]


def _warn_unknown(environ: Mapping[str, str]) -> None:
    """One warning naming every ``OMNII_OBS_*`` variable the package does not know (a typo, usually)."""
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in BY_NAME)
    if unknown:
        known = sorted(name for name in BY_NAME if name.startswith(ENV_PREFIX))
        _logger.warning(
            "ignoring unknown variable(s) %s; known %s* variables are: %s",
            ", ".join(unknown),
            ENV_PREFIX,
            ", ".join(known),
        )


def _build(values: Mapping[str, Any]) -> ObservabilityConfig:
    """An ``ObservabilityConfig`` from dotted field names; sections not mentioned keep their defaults."""
    nested: dict[str, Any] = {}
    for field, value in values.items():
        section, _, name = field.rpartition(".")
        target = nested.setdefault(section, {}) if section else nested
        target[name] = value
    return msgspec.convert(nested, ObservabilityConfig, from_attributes=False)
