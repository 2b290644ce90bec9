"""Every private name of a dependency the package relies on (the package _internal/_compat/), checked.

Each test fails loudly, naming what changed, when an upgrade of sentry-sdk or OpenTelemetry renames or
reshapes something the package uses, so the break shows here rather than in production.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
from collections.abc import Sequence
from typing import ClassVar

import pytest
import sentry_sdk
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode
from sentry_sdk.transport import HttpTransport

from litestar_omnii_obs._internal import _compat
from litestar_omnii_obs._internal._compat import sentry as _compat_sentry
from litestar_omnii_obs._internal.scrubbing import REDACTED, SENTRY_PII_KEYS
from tests.peers.sentry_ingest import SentryIngest


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
    client = sentry_sdk.Client(dsn="https://k@127.0.0.1:9/1", transport=_compat_sentry.SentryHttpTransport)
    try:
        transport = client.transport
        assert isinstance(transport, _compat_sentry.SentryHttpTransport)
        assert isinstance(transport._disabled_until, dict), "HttpTransport._disabled_until is no longer a dict"
        assert callable(getattr(transport._worker, "start", None)), "sentry-sdk's worker has no start()"
        assert callable(getattr(transport._worker, "submit", None)), "sentry-sdk's worker has no submit()"
    finally:
        client.close(timeout=0)


class _Recording(_compat_sentry.SentryHttpTransport):
    """Records what sentry-sdk hands the public hooks, and sends through :meth:`post`."""

    seen: ClassVar[dict[str, object]] = {}

    def pool_options(self, options: dict[str, object]) -> dict[str, object]:
        self.seen["pool_options"] = dict(options)
        return options

    def send_body(self, body: bytes, headers: dict[str, str], endpoint_type: object, envelope: object) -> None:
        response = self.post(body, headers, endpoint_type)
        try:
            self.update_rate_limits(response)
            self.seen["status"] = response.status
        finally:
            response.close()


def test_sentry_sdk_calls_the_public_hooks_and_post_reaches_sentry() -> None:
    _Recording.seen.clear()
    with SentryIngest(rate_limits="60:error:organization") as ingest:
        client = sentry_sdk.Client(dsn=ingest.dsn, transport=_Recording, default_integrations=False)
        try:
            transport = client.transport
            assert isinstance(transport, _Recording)
            transport.start_worker()
            client.capture_event({"message": "through the public hooks"})
            ingest.wait_for_events(1)
            client.flush(timeout=5)
            assert "num_pools" in _Recording.seen["pool_options"]  # type: ignore[operator]
            assert _Recording.seen["status"] == 200
            assert [event["message"] for event in ingest.events()] == ["through the public hooks"]
            assert ingest.requests()[0].headers["x-sentry-auth"].startswith("Sentry ")  # post() added the auth
            assert transport._check_disabled("error"), "update_rate_limits() no longer reaches sentry-sdk's windows"
            ran = threading.Event()
            assert transport.submit(ran.set)
            assert ran.wait(5)
        finally:
            client.close(timeout=1)


def test_sentry_litestar_integration_still_names_what_it_injects() -> None:
    from sentry_sdk.integrations.litestar import LitestarIntegration

    hooks = _compat.sentry_litestar_hooks()
    assert hooks is not None, "sentry_sdk.integrations.litestar no longer imports"
    hook, middleware = hooks
    assert callable(hook)
    assert isinstance(middleware, type)
    patched = inspect.getsource(LitestarIntegration.setup_once) + inspect.getsource(
        sys.modules[LitestarIntegration.__module__]
    )
    assert "exception_handler" in patched
    assert "SentryLitestarASGIMiddleware" in patched


def test_a_dropped_span_needs_nothing_of_non_recording_spans_init() -> None:
    from opentelemetry.trace import NonRecordingSpan

    from litestar_omnii_obs._internal.sampling import DroppedSpan

    own = {"__init__", "get_span_context", "__repr__"}
    for name, member in vars(NonRecordingSpan).items():
        if callable(member) and name not in own:
            assert "_context" not in inspect.getsource(member), f"NonRecordingSpan.{name} now reads _context"
    span = DroppedSpan(5)
    span.set_attribute("a", 1)
    span.add_event("e")
    span.update_name("n")
    span.end()
    assert not span.is_recording()
    assert span.get_span_context().trace_id == 5
    assert repr(span).startswith("DroppedSpan(")


def test_sentry_marks_scrubbed_values_as_the_package_does() -> None:
    assert _compat_sentry.SENSITIVE_DATA_SUBSTITUTE == "[Filtered]" == REDACTED
    value = _compat_sentry.AnnotatedValue.substituted_because_contains_sensitive_data()
    assert value.value == "[Filtered]"


def test_our_copy_of_sentry_sdk_s_pii_keys_still_matches_it() -> None:
    """Copied so that the request path matches keys without importing sentry-sdk (issue 22)."""
    from sentry_sdk.scrubber import DEFAULT_PII_DENYLIST

    assert tuple(DEFAULT_PII_DENYLIST) == SENTRY_PII_KEYS


def test_sentry_sdk_s_bad_dsn_is_still_a_value_error() -> None:
    """The environment check catches ValueError only, so it need not import sentry-sdk to name BadDsn."""
    from sentry_sdk.utils import BadDsn

    assert issubclass(BadDsn, ValueError)


class _Stuck(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(5)
        return SpanExportResult.SUCCESS


def test_providers_keep_the_disabled_flag_the_config_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = TracerProvider()
    meters = MeterProvider()
    assert provider._disabled is True, "TracerProvider no longer reads OTEL_SDK_DISABLED into _disabled"
    assert meters._disabled is True, "MeterProvider no longer reads OTEL_SDK_DISABLED into _disabled"
    _compat.follow_config_not_environ(provider, False)
    span = provider.get_tracer("t").start_span("s")
    assert span.is_recording()


def test_the_tracer_context_manager_type_still_exists() -> None:
    from opentelemetry.util import _decorator

    assert hasattr(_decorator, "_AgnosticContextManager")


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


def test_sentry_sdk_still_names_its_event_and_hint_types() -> None:
    # Type-checking only (mypy reads them); a rename shows here as well as in `make typecheck`.
    from sentry_sdk import _types

    source = inspect.getsource(_types)
    assert "    Event = TypedDict(" in source
    assert "    Hint = " in source
