"""Live checks for ``litestar obs``: one span, one metric point, one event, each to where the app sends it.

The span and the metric point go through the exporter builders the app's lifespan uses
(:func:`~litestar_omnii_obs._internal.tracing.build_span_exporter`,
:func:`~litestar_omnii_obs._internal.tracing.metric_exporter_from_config`), the event through the app's
Sentry path, so a check that passes means the app's own pipes work. Every check is bounded by
its timeout, even against a dead peer.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import msgspec

from litestar_omnii_obs._internal.config import ObservabilityConfig, redact_url

__all__ = ["DEFAULT_TIMEOUT", "ObservabilityTestError", "PipeResult", "check_pipes", "send_test_error"]

#: ``--timeout`` default (seconds): how long a command waits for one peer.
DEFAULT_TIMEOUT = 5.0

Result = Literal["ok", "failed", "off"]

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
    from litestar_omnii_obs._internal.env import display_value

    target = redact_url(endpoint) or "-"
    if config.tracing.otlp_headers:
        target += " (headers " + display_value("tracing.otlp_headers", config.tracing.otlp_headers) + ")"
    return target


_NO_ANSWER = "export failed (no answer in time)"


class _ExporterErrors(logging.Handler):
    """Keeps the last export failure our exporters logged, per thread (why the check failed); prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: dict[int | None, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            message = record.getMessage()
            reason = re.search(r" is failing \((.*)\); ", message)
            self.last[record.thread] = (reason.group(1) if reason else message.splitlines()[0])[:160]


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
    """One span through the exporter the app builds (:func:`.tracing.build_span_exporter`)."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from litestar_omnii_obs._internal.tracing import build_resource, build_span_exporter

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
    """One metric point through the exporter the app builds (``tracing.metric_exporter_from_config``)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult

    from litestar_omnii_obs._internal.tracing import build_resource, metric_exporter_from_config

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=build_resource(config), metric_readers=[reader], shutdown_on_exit=False)
    counter = provider.get_meter("litestar_omnii_obs").create_counter("omnii.check", description="obs check point")
    counter.add(1, {"omnii.check": "true"})
    data = reader.get_metrics_data()
    provider.shutdown()
    if data is None:
        return False, "no metric point was produced"
    exporter = metric_exporter_from_config(_bounded(config, timeout))
    try:
        ok = exporter.export(data, timeout_millis=timeout * 1000) is MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    return (True, "1 point (omnii.check)") if ok else (False, errors.last.get(threading.get_ident()) or _NO_ANSWER)


def _check_sentry(config: ObservabilityConfig, timeout: float) -> tuple[bool, str]:
    import sentry_sdk
    import urllib3

    from litestar_omnii_obs._internal._compat.sentry import SentryHttpTransport

    outcome: dict[str, Any] = {}
    answered = threading.Event()

    class CheckTransport(SentryHttpTransport):
        """sentry-sdk's own HTTP transport, with no retries and the check's timeout; records the answer."""

        def pool_options(self, options: dict[str, Any]) -> dict[str, Any]:
            options["retries"] = False
            options["timeout"] = urllib3.Timeout(total=timeout)
            return options

        def send_body(self, body: bytes, headers: dict[str, str], endpoint_type: Any, envelope: Any) -> None:
            try:
                response = self.post(body, headers, endpoint_type)
            except Exception as exc:
                outcome.setdefault("result", (False, _short(exc)))
            else:
                try:
                    outcome.setdefault("result", _sentry_answer(int(response.status)))
                finally:
                    response.close()
            answered.set()

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


def _sentry_answer(status: int) -> tuple[bool, str]:
    """A check's outcome from Sentry's HTTP status."""
    if 200 <= status < 300:
        return True, f"HTTP {status}"
    return False, f"HTTP {status}" + (" (rate limited)" if status == 429 else "")


def _timed(pipe: str, target: str, run: Callable[[], tuple[bool, str]]) -> PipeResult:
    start = time.perf_counter()
    try:
        ok, detail = run()
    except Exception as exc:
        ok, detail = False, _short(exc)
    elapsed = round((time.perf_counter() - start) * 1000, 1)
    return PipeResult(pipe, target, "ok" if ok else "failed", detail, elapsed)


_Check = Callable[[], tuple[bool, str]]
#: A pipe: its name, its target as shown, its check (``None`` when not configured), why it is off.
_Pipe = tuple[str, str, _Check | None, str]


def _otlp_off_reason(config: ObservabilityConfig) -> str:
    """Why the OTLP pipes are off, naming the setting that turned them off."""
    if not config.tracing.enabled:
        return "OMNII_OBS_TRACING=false"
    if config.tracing.sdk_disabled:
        return "OTEL_SDK_DISABLED=true"
    return "OTEL_EXPORTER_OTLP_ENDPOINT not set"


def _pipes(config: ObservabilityConfig, timeout: float, errors: _ExporterErrors) -> list[_Pipe]:
    """The three pipes in report order, each with its check if ``config`` sends anything through it."""
    traces = config.tracing_active and bool(config.tracing.traces_endpoint)
    metrics = config.tracing_active and bool(config.tracing.metrics_endpoint)
    otlp_off = _otlp_off_reason(config)
    return [
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


def _check_threads(pipes: Sequence[_Pipe], finished: dict[str, PipeResult]) -> dict[str, threading.Thread]:
    """A daemon thread per configured pipe, recording its result in ``finished`` (a hung peer cannot block exit)."""
    threads: dict[str, threading.Thread] = {}
    for pipe, target, run, _ in pipes:
        if run is not None:

            def work(pipe: str = pipe, target: str = target, run: _Check = run) -> None:
                finished[pipe] = _timed(pipe, target, run)

            threads[pipe] = threading.Thread(target=work, name=f"omnii-obs-check-{pipe}", daemon=True)
    return threads


def _pipe_result(
    pipe: _Pipe, thread: threading.Thread | None, finished: dict[str, PipeResult], timeout: float
) -> PipeResult:
    """A pipe's row: off if it has no check, failed if its check did not finish in time."""
    name, target, _, why_off = pipe
    if thread is None:
        return PipeResult(name, target, "off", why_off, None)
    if thread.is_alive() or name not in finished:
        return PipeResult(name, target, "failed", f"no answer within {timeout:g}s", None)
    return finished[name]


def check_pipes(config: ObservabilityConfig, timeout: float = DEFAULT_TIMEOUT) -> list[PipeResult]:
    """Send one span, one metric point and one event where ``config`` says; wait for each answer.

    The configured pipes run in parallel daemon threads, each bounded by ``timeout``; a pipe
    still busy a second after that is reported as failed, so the whole check is bounded.
    """
    errors = _ExporterErrors()
    pipes = _pipes(config, timeout, errors)
    finished: dict[str, PipeResult] = {}
    threads = _check_threads(pipes, finished)
    with _quiet_loggers(("litestar_omnii_obs",), errors):
        for thread in threads.values():
            thread.start()
        deadline = time.monotonic() + timeout + 1.0
        for thread in threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
    return [_pipe_result(pipe, threads.get(pipe[0]), finished, timeout) for pipe in pipes]


# --------------------------------------------------------------------------- obs test-error


class ObservabilityTestError(RuntimeError):
    """Raised (and reported) by ``litestar obs test-error``."""


def send_test_error(config: ObservabilityConfig, message: str, timeout: float) -> tuple[str | None, str | None]:
    """Raise and report a test error through the request-error path; returns ``(event_id, failure)``.

    Sentry is started by :func:`~litestar_omnii_obs._internal.sentry.start_sentry` (same scrubber,
    ``before_send``, ignored errors and transport as the app) and the error goes through the
    reporter's ``capture``; then the queue is flushed within ``timeout``.
    """
    import sentry_sdk

    from litestar_omnii_obs._internal import sentry

    if not config.sentry.dsn:
        return None, "SENTRY_DSN is not set: there is nowhere to send a test error"
    # Bound the SDK's own flush at exit as well, so the command answers within about ``timeout``.
    bounded = msgspec.structs.replace(config, sentry=msgspec.structs.replace(config.sentry, flush_timeout=timeout))
    # The outage's reason is read from the transport's health, not from what it logs: keep the log quiet.
    with _quiet_loggers(("litestar_omnii_obs",), logging.NullHandler()):
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
    return event_id, _test_error_failure(transport, drained, timeout)


def _test_error_failure(transport: object, drained: bool, timeout: float) -> str | None:
    """Why the test error did not reach Sentry, read from the transport's health; ``None`` if it did."""
    from litestar_omnii_obs._internal.sentry_transport import QuietHttpTransport

    health = transport.health if isinstance(transport, QuietHttpTransport) else None
    refusal = f"Sentry did not accept it: {health.last_reason or 'the send failed'}" if health is not None else None
    if health is not None and health.failing:  # down, or rate-limited
        return refusal
    if not drained:
        return f"Sentry did not answer within {timeout:g}s"
    if health is not None and health.dropped:  # answered, and refused it (a 4xx)
        return refusal
    return None
