"""``litestar obs``: the resolved configuration, a live check of every pipe, a test error.

The plugin is also a Litestar CLI plugin; its ``on_cli_init`` calls :func:`add_obs_commands`,
which adds an ``obs`` group to ``litestar``::

    litestar --app example_app.app:app obs config        # every setting, its value and where it came from
    litestar --app example_app.app:app obs check         # one span, one metric point, one event; round trips
    litestar --app example_app.app:app obs test-error    # a test exception through the request-error path

An invalid environment usually fails while the CLI imports the app (``ObservabilityConfig.from_env()``
at module level), before any command runs. So that the user sees the ``ConfigError`` text and exit
code 2 rather than a traceback, importing this module from the ``litestar`` command line (the plugin
module imports it) installs a ``sys.excepthook`` that does exactly that for a ``ConfigError`` and
defers to the previous hook for anything else. Nothing is installed in any other process.

Only the standard library and the config are imported at module level; click, sentry-sdk and the
OTLP exporters are imported when a command runs, so a server importing the plugin pays nothing for it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import msgspec

from litestar_omnii_obs.config import ConfigError, ObservabilityConfig, redact_url

if TYPE_CHECKING:
    import click

__all__ = ["ObservabilityTestError", "PipeResult", "add_obs_commands", "check_pipes", "config_rows"]

#: ``--timeout`` default (seconds): how long a command waits for one peer.
DEFAULT_TIMEOUT = 5.0

Source = Literal["default", "environment", "code"]
Result = Literal["ok", "failed", "off"]

# --------------------------------------------------------------------------- ConfigError at app import


def _exit_on_config_error(previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any]) -> Any:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if isinstance(exc, ConfigError):
            sys.stderr.write(f"Error: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(2)  # CPython exits with this code when an excepthook raises SystemExit
        previous(exc_type, exc, tb)

    hook.omnii_obs = True  # type: ignore[attr-defined]
    return hook


# The litestar CLI imports the app (and so this module) inside its own group set-up, where a
# ConfigError escapes click entirely; only the interpreter's last-resort hook can still answer.
if "litestar.cli.main" in sys.modules and not getattr(sys.excepthook, "omnii_obs", False):
    sys.excepthook = _exit_on_config_error(sys.excepthook)


# --------------------------------------------------------------------------- obs config


@dataclass(frozen=True)
class ConfigRow:
    """One setting as ``obs config`` shows it; ``value`` is already redacted."""

    name: str
    value: str
    source: Source
    variable: str | None


def _leaves(struct: msgspec.Struct, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for field in msgspec.structs.fields(type(struct)):
        value = getattr(struct, field.name)
        if isinstance(value, msgspec.Struct):
            yield from _leaves(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value


def config_rows(config: ObservabilityConfig, environ: Mapping[str, str] | None = None) -> list[ConfigRow]:
    """Every setting of ``config`` with where it came from, secrets hidden.

    ``environment``: equal to what ``from_env`` reads from the variable that is set for it;
    ``default``: equal to ``ObservabilityConfig()`` and no variable set; anything else was
    set in code. Variables, precedence and redaction come from :data:`litestar_omnii_obs.env.VARIABLES`.

    Raises:
        ConfigError: when the environment is invalid.
    """
    from litestar_omnii_obs.env import VARIABLES, display_value, read_environ

    environ = os.environ if environ is None else environ
    env_config, sources = read_environ(environ)
    from_env = dict(_leaves(env_config))
    defaults = dict(_leaves(ObservabilityConfig()))
    first_var: dict[str, str] = {}
    for var in VARIABLES:
        first_var.setdefault(var.field, var.name)
    rows: list[ConfigRow] = []
    for name, value in _leaves(config):
        set_by = sources.get(name)
        source: Source = "code"
        if set_by is not None and value == from_env.get(name):
            source = "environment"
        elif set_by is None and value == defaults.get(name):
            source = "default"
        rows.append(ConfigRow(name, display_value(name, value), source, set_by or first_var.get(name)))
    return rows


# --------------------------------------------------------------------------- obs check


@dataclass(frozen=True)
class PipeResult:
    """One pipe's outcome: ``off`` (not configured), ``ok`` or ``failed`` (with why)."""

    pipe: str
    target: str
    result: Result
    detail: str
    time_ms: float | None


def _short(exc: BaseException) -> str:
    text = re.sub(r"<[^>]*>: ", "", str(exc)).strip()  # urllib3 prefixes "<...Connection object at 0x..>: "
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _otlp_target(config: ObservabilityConfig, endpoint: str | None) -> str:
    from litestar_omnii_obs.env import display_value

    target = redact_url(endpoint) or "-"
    if config.tracing.otlp_headers:
        target += " (headers " + display_value("tracing.otlp_headers", config.tracing.otlp_headers) + ")"
    return target


_NO_ANSWER = "export failed (no answer in time)"


class _ExporterErrors(logging.Handler):
    """Keeps the OTLP exporter's last error per thread (the reason an export failed); prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: dict[int | None, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            message = record.getMessage()
            reason = re.search(r" is failing \((.*)\); ", message)
            if reason:
                self.last[record.thread] = reason.group(1)[:160]
                return
            code = re.search(r"StatusCode\.(\w+)", message)
            details = re.search(r"[Ee]rror details: (.*)", message)
            self.last[record.thread] = (
                " ".join(part for part in (code.group(1) if code else "", details.group(1) if details else "") if part)
                or message.splitlines()[0][:160]
            )


@contextmanager
def _quiet_loggers(names: Sequence[str], handler: logging.Handler) -> Iterator[None]:
    """Route these loggers to ``handler`` only, so the check's output stays a table."""
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate))
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate


def _bounded(config: ObservabilityConfig, timeout: float) -> ObservabilityConfig:
    return msgspec.structs.replace(config, tracing=msgspec.structs.replace(config.tracing, export_timeout=timeout))


def _check_traces(config: ObservabilityConfig, timeout: float, errors: _ExporterErrors) -> tuple[bool, str]:
    """One span through the exporter the app builds (:func:`~litestar_omnii_obs.tracing.build_span_exporter`)."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from litestar_omnii_obs.tracing import build_resource, build_span_exporter

    provider = TracerProvider(resource=build_resource(config), sampler=ALWAYS_ON, shutdown_on_exit=False)
    span = provider.get_tracer("litestar_omnii_obs").start_span("litestar obs check", attributes={"omnii.check": True})
    span.end()
    exporter = build_span_exporter(_bounded(config, timeout), None)
    if not isinstance(span, ReadableSpan) or exporter is None:  # pragma: no cover - ALWAYS_ON, endpoint set
        return False, "could not build a test span"
    try:
        ok = exporter.export([span]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    if ok:
        return True, f"span {span.get_span_context().trace_id:032x}"
    return False, errors.last.get(threading.get_ident()) or _NO_ANSWER


def _check_metrics(config: ObservabilityConfig, timeout: float, errors: _ExporterErrors) -> tuple[bool, str]:
    """One metric point through the exporter the app builds (``tracing.build_metric_exporter_for``)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult

    from litestar_omnii_obs.tracing import build_metric_exporter_for, build_resource

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=build_resource(config), metric_readers=[reader], shutdown_on_exit=False)
    counter = provider.get_meter("litestar_omnii_obs").create_counter("omnii.check", description="obs check point")
    counter.add(1, {"omnii.check": "true"})
    data = reader.get_metrics_data()
    provider.shutdown()
    if data is None:
        return False, "no metric point was produced"
    exporter = build_metric_exporter_for(_bounded(config, timeout))
    try:
        ok = exporter.export(data, timeout_millis=timeout * 1000) is MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    return (True, "1 point (omnii.check)") if ok else (False, errors.last.get(threading.get_ident()) or _NO_ANSWER)


def _check_sentry(config: ObservabilityConfig, timeout: float) -> tuple[bool, str]:
    import sentry_sdk
    import urllib3
    from sentry_sdk.transport import HttpTransport

    outcome: dict[str, Any] = {}
    answered = threading.Event()

    class CheckTransport(HttpTransport):
        """sentry-sdk's own HTTP transport, with no retries and the check's timeout; records the answer."""

        def _get_pool_options(self) -> dict[str, Any]:
            options: dict[str, Any] = super()._get_pool_options()
            options["retries"] = False
            options["timeout"] = urllib3.Timeout(total=timeout)
            return options

        def _send_request(self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Any = None) -> None:
            try:
                super()._send_request(body, headers, endpoint_type, envelope)
            except Exception as exc:
                outcome.setdefault("result", (False, _short(exc)))
            answered.set()

        def _handle_response(self, response: Any, envelope: Any) -> None:
            super()._handle_response(response, envelope)
            status = int(response.status)
            if 200 <= status < 300:
                outcome.setdefault("result", (True, f"HTTP {status}"))
            else:
                reason = " (rate limited)" if status == 429 else ""
                outcome.setdefault("result", (False, f"HTTP {status}{reason}"))

    client = sentry_sdk.Client(
        dsn=config.sentry.dsn,
        transport=CheckTransport,
        environment=config.sentry.environment or config.environment,
        release=config.sentry.release or config.version,
        default_integrations=False,
        auto_enabling_integrations=False,
        send_client_reports=False,
    )
    try:
        event_id = client.capture_event(
            {
                "message": f"litestar obs check from {config.service_name}",
                "level": "info",
                "logger": "litestar_omnii_obs.cli",
                "tags": {"omnii.check": "true"},
            }
        )
        if event_id is None:
            return False, "sentry-sdk dropped the test event"
        if not answered.wait(timeout + 1.0):
            return False, f"no answer within {timeout:g}s"
        ok, detail = outcome.get("result", (False, "no answer"))
        return ok, f"{detail}, event {event_id}" if ok else detail
    finally:
        client.close(timeout=0.0)


def _timed(pipe: str, target: str, run: Callable[[], tuple[bool, str]]) -> PipeResult:
    start = time.perf_counter()
    try:
        ok, detail = run()
    except Exception as exc:
        ok, detail = False, _short(exc)
    elapsed = round((time.perf_counter() - start) * 1000, 1)
    return PipeResult(pipe, target, "ok" if ok else "failed", detail, elapsed)


def check_pipes(config: ObservabilityConfig, timeout: float = DEFAULT_TIMEOUT) -> list[PipeResult]:
    """Send one span, one metric point and one event where ``config`` says; wait for each answer.

    The configured pipes run in parallel daemon threads, each bounded by ``timeout``; a pipe
    still busy a second after that is reported as failed, so the whole check is bounded.
    """
    from litestar_omnii_obs._compat import SDK_EXPORT_LOGGERS

    errors = _ExporterErrors()
    traces = config.tracing_active and bool(config.tracing.traces_endpoint)
    metrics = config.tracing_active and bool(config.tracing.metrics_endpoint)
    otlp_off = "OTEL_EXPORTER_OTLP_ENDPOINT not set"
    if not config.tracing.enabled:
        otlp_off = "OMNII_OBS_TRACING=false"
    elif config.tracing.sdk_disabled:
        otlp_off = "OTEL_SDK_DISABLED=true"
    pipes: list[tuple[str, str, Callable[[], tuple[bool, str]] | None, str]] = [
        (
            "otlp-traces",
            _otlp_target(config, config.tracing.traces_endpoint),
            partial(_check_traces, config, timeout, errors) if traces else None,
            otlp_off,
        ),
        (
            "otlp-metrics",
            _otlp_target(config, config.tracing.metrics_endpoint),
            partial(_check_metrics, config, timeout, errors) if metrics else None,
            otlp_off,
        ),
        (
            "sentry",
            redact_url(config.sentry.dsn) or "-",
            partial(_check_sentry, config, timeout) if config.sentry.dsn else None,
            "SENTRY_DSN not set",
        ),
    ]
    finished: dict[str, PipeResult] = {}
    threads: dict[str, threading.Thread] = {}
    for pipe, target, run, _ in pipes:
        if run is not None:

            def work(pipe: str = pipe, target: str = target, run: Callable[[], tuple[bool, str]] = run) -> None:
                finished[pipe] = _timed(pipe, target, run)

            threads[pipe] = threading.Thread(target=work, name=f"omnii-obs-check-{pipe}", daemon=True)
    with _quiet_loggers((*SDK_EXPORT_LOGGERS, "litestar_omnii_obs"), errors):
        for thread in threads.values():
            thread.start()
        deadline = time.monotonic() + timeout + 1.0
        for thread in threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
    results: list[PipeResult] = []
    for pipe, target, _, why_off in pipes:
        if pipe not in threads:
            results.append(PipeResult(pipe, target, "off", why_off, None))
        elif threads[pipe].is_alive() or pipe not in finished:
            results.append(PipeResult(pipe, target, "failed", f"no answer within {timeout:g}s", None))
        else:
            results.append(finished[pipe])
    return results


# --------------------------------------------------------------------------- obs test-error


class ObservabilityTestError(RuntimeError):
    """Raised (and reported) by ``litestar obs test-error``."""


#: How :class:`~litestar_omnii_obs.sentry.QuietHttpTransport` logs a failed send; group 1 is the reason.
_SEND_FAILED = re.compile(r"^sending to Sentry at \S+ failed \((.*)\); ")


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def send_test_error(config: ObservabilityConfig, message: str, timeout: float) -> tuple[str | None, str | None]:
    """Raise and report a test error through the request-error path; returns ``(event_id, failure)``.

    Sentry is started by :func:`~litestar_omnii_obs.sentry.start_sentry` (same scrubber,
    ``before_send``, ignored errors and transport as the app) and the error goes through the
    reporter's ``capture``; then the queue is flushed within ``timeout``.
    """
    import sentry_sdk

    from litestar_omnii_obs import sentry
    from litestar_omnii_obs._compat import QuietHttpTransport

    if not config.sentry.dsn:
        return None, "SENTRY_DSN is not set: there is nowhere to send a test error"
    # Bound the SDK's own flush at exit as well, so the command answers within about ``timeout``.
    bounded = msgspec.structs.replace(config, sentry=msgspec.structs.replace(config.sentry, flush_timeout=timeout))
    warnings = _Warnings()
    with _quiet_loggers(("litestar_omnii_obs",), warnings):
        reporter = sentry.start_sentry(bounded)
        assert reporter is not None  # a DSN is set
        try:
            raise ObservabilityTestError(message)
        except ObservabilityTestError as exc:
            event_id = reporter.capture(exc, tags={"omnii.test_error": "true"})
        transport = sentry_sdk.get_client().transport
        started = time.monotonic()
        sentry_sdk.flush(timeout=timeout)
        drained = time.monotonic() - started < timeout * 0.98  # flush returns early once the queue is empty
        reporter.close()
    if event_id is None:
        return None, "the event was dropped before sending (an ignored error type or a before_send hook)"
    if isinstance(transport, QuietHttpTransport) and transport._failing:  # pyright: ignore[reportPrivateUsage]
        reasons = [m.group(1) for m in map(_SEND_FAILED.search, warnings.messages) if m]
        return event_id, f"Sentry did not accept it: {reasons[-1] if reasons else 'the send failed'}"
    if not drained:
        return event_id, f"Sentry did not answer within {timeout:g}s"
    return event_id, None


# --------------------------------------------------------------------------- the click group


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows])


def _config_error(exc: ConfigError) -> NoReturn:
    import click

    click.echo(f"Error: {exc}", err=True)
    raise click.exceptions.Exit(2)


def add_obs_commands(cli: click.Group, config: ObservabilityConfig) -> None:
    """Add the ``obs`` group (``config``, ``check``, ``test-error``) to the Litestar CLI group ``cli``."""
    import click

    if "obs" in cli.commands:  # a second plugin instance: the first one's commands stay
        return

    timeout_option = click.option(
        "--timeout",
        type=click.FloatRange(0.1, 300.0),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds to wait for each peer.",
    )
    json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")

    @cli.group(name="obs")
    def obs() -> None:
        """Observability: show the configuration, check the pipes, send a test error."""

    @obs.command(name="config")
    @json_option
    def config_command(as_json: bool) -> None:
        """Show the resolved configuration and where each value came from (secrets hidden)."""
        try:
            rows = config_rows(config)
        except ConfigError as exc:
            _config_error(exc)
        if as_json:
            click.echo(json.dumps({"config": [asdict(row) for row in rows]}, indent=2))
            return
        table = [(row.name, row.value, row.source, row.variable or "-") for row in rows]
        click.echo(_table(("setting", "value", "source", "variable"), table))

    @obs.command(name="check")
    @timeout_option
    @json_option
    def check_command(timeout: float, as_json: bool) -> None:
        """Send one span, one metric point and one event to what is configured; report each round trip.

        Exits 1 when a configured pipe fails; unconfigured pipes are shown as "off".
        """
        results = check_pipes(config, timeout)
        failed = [r for r in results if r.result == "failed"]
        if as_json:
            click.echo(json.dumps({"ok": not failed, "pipes": [asdict(r) for r in results]}, indent=2))
        else:
            rows = [
                (r.pipe, r.target, r.result, "-" if r.time_ms is None else f"{r.time_ms:.1f} ms", r.detail)
                for r in results
            ]
            click.echo(_table(("pipe", "target", "result", "time", "detail"), rows))
            configured = sum(1 for r in results if r.result != "off")
            if not configured:
                summary = "no pipe is configured (set OTEL_EXPORTER_OTLP_ENDPOINT and/or SENTRY_DSN)"
            elif failed:
                summary = f"{len(failed)} of {configured} configured pipe(s) failed"
            else:
                summary = f"all {configured} configured pipe(s) ok"
            click.echo(f"\n{summary}")
        if failed:
            raise click.exceptions.Exit(1)

    @obs.command(name="test-error")
    @click.option("--message", default="litestar obs test-error: a test exception", show_default=True)
    @timeout_option
    def test_error_command(message: str, timeout: float) -> None:
        """Raise a test exception and report it to Sentry like a request error; print its event id."""
        event_id, failure = send_test_error(config, message, timeout)
        if event_id:
            click.echo(f"event id: {event_id}")
        if failure:
            click.echo(f"Error: {failure}", err=True)
            raise click.exceptions.Exit(1)
        click.echo(f"sent to {redact_url(config.sentry.dsn)}")
