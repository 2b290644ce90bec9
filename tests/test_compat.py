"""Every private name of a dependency the package relies on (litestar_omnii_obs/_internal/_compat.py), checked.

Each test fails loudly, naming what changed, when an upgrade of sentry-sdk or OpenTelemetry renames or
reshapes something the package uses, so the break shows here rather than in production.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Sequence

import pytest
import sentry_sdk
from opentelemetry.exporter.otlp.proto.grpc import exporter as grpc_exporter_module
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode
from sentry_sdk.transport import HttpTransport

from litestar_omnii_obs._internal import _compat


def test_sentry_transport_hooks_keep_their_names_and_parameters() -> None:
    expected = {
        "_get_pool_options": [],
        "_send_request": ["body", "headers", "endpoint_type", "envelope"],
        "_update_rate_limits": ["response"],
        "_update_headers": ["headers"],
        "_request": ["method", "endpoint_type", "body", "headers"],
        "record_lost_event": ["reason", "data_category", "item"],
        "capture_envelope": ["envelope"],
        "flush": ["timeout", "callback"],
    }
    for name, params in expected.items():
        method = getattr(HttpTransport, name, None)
        assert callable(method), f"sentry-sdk's HttpTransport no longer has {name}"
        found = [p for p in inspect.signature(method).parameters if p != "self"]
        assert found[: len(params)] == params, f"HttpTransport.{name} now takes {found}"
    client = sentry_sdk.Client(dsn="https://k@127.0.0.1:9/1", transport=_compat.QuietHttpTransport)
    try:
        transport = client.transport
        assert isinstance(transport, _compat.QuietHttpTransport)
        assert isinstance(transport._disabled_until, dict), "HttpTransport._disabled_until is no longer a dict"
        assert callable(getattr(transport._worker, "start", None)), "sentry-sdk's worker has no start()"
        assert callable(getattr(transport._worker, "submit", None)), "sentry-sdk's worker has no submit()"
    finally:
        client.close(timeout=0)


def test_sentry_marks_scrubbed_values_as_the_package_does() -> None:
    assert _compat.SENSITIVE_DATA_SUBSTITUTE == "[Filtered]"
    value = _compat.AnnotatedValue.substituted_because_contains_sensitive_data()
    assert value.value == "[Filtered]"


class _Stuck(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(5)
        return SpanExportResult.SUCCESS


def test_the_filter_swallows_only_export_failures() -> None:
    log_filter = _compat.ExportLogFilter()
    failed = logging.LogRecord("x", logging.WARNING, __file__, 1, "Failed to export metrics batch", None, None)
    other = logging.LogRecord("x", logging.WARNING, __file__, 1, "Queue full, dropping span.", None, None)
    assert log_filter.filter(failed) is False
    assert log_filter.filter(other) is True


def test_grpc_metric_exporter_still_logs_failures_with_the_text_we_match() -> None:
    source = inspect.getsource(grpc_exporter_module)
    assert "Transient error" in source
    assert "Failed to export" in source


def test_providers_keep_the_disabled_flag_the_config_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = TracerProvider()
    meters = MeterProvider()
    assert provider._disabled is True, "TracerProvider no longer reads OTEL_SDK_DISABLED into _disabled"
    assert meters._disabled is True, "MeterProvider no longer reads OTEL_SDK_DISABLED into _disabled"
    _compat.follow_config_not_environ(provider, False)
    span = provider.get_tracer("t").start_span("s")
    assert span.is_recording()


def test_metric_exporters_keep_their_preferences_where_we_read_them() -> None:
    exporter = OTLPMetricExporter(endpoint="http://127.0.0.1:9", insecure=True)
    try:
        preferences = _compat.exporter_preferences(exporter)
    finally:
        exporter.shutdown(timeout_millis=100)
    assert set(preferences) == {"preferred_temporality", "preferred_aggregation"}
    assert isinstance(preferences["preferred_temporality"], dict)


def test_the_tracer_context_manager_type_still_exists() -> None:
    from opentelemetry.util import _decorator

    assert hasattr(_decorator, "_AgnosticContextManager")


def test_the_otel_context_variable_is_what_attach_and_detach_use() -> None:
    from opentelemetry import context as otel_context

    from litestar_omnii_obs._internal._compat import otel_context_var

    variable = otel_context_var()
    assert variable is not None, "OpenTelemetry's runtime context no longer keeps _current_context"
    key = otel_context.create_key("compat-test")
    token = variable.set(otel_context.set_value(key, "set directly"))
    try:
        assert otel_context.get_value(key) == "set directly"  # what attach would have made current
    finally:
        variable.reset(token)
    assert otel_context.get_value(key) is None
    public = otel_context.attach(otel_context.set_value(key, "attached"))
    assert variable.get().get(key) == "attached"  # and attach sets this very variable
    otel_context.detach(public)


def test_readable_span_properties_read_the_fields_server_spans_set() -> None:
    span = ReadableSpan("before", status=Status(StatusCode.UNSET), start_time=1)
    _compat.set_span_end(span, 5)
    _compat.set_span_status(span, Status(StatusCode.ERROR, "boom"))
    _compat.set_span_name(span, "after")
    assert (span.end_time, span.name) == (5, "after")
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "boom")
    exported = json.loads(span.to_json())
    assert (exported["name"], exported["status"]["status_code"]) == ("after", "ERROR")
    assert exported["end_time"] is not None
