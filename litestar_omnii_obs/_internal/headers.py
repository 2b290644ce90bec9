"""Request and response headers on the server span, chosen by OpenTelemetry's standard variables.

``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` / ``..._SERVER_RESPONSE`` (or
``TracingConfig.capture_request_headers`` / ``capture_response_headers``) name the headers, as
comma-separated names or regular expressions matched against the whole name in any case,
as OpenTelemetry's Python instrumentations read them. A captured header becomes
``http.request.header.<name>`` / ``http.response.header.<name>``: the name in lower case
(dashes kept, as the semantic conventions write it) and the value a list of strings, one per
occurrence. The value is ``[REDACTED]`` when the name matches
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` (a regular expression found
anywhere in it, any case) or looks secret by the package's one rule
(:meth:`~litestar_omnii_obs._internal.scrubbing.SecretScrubber.is_secret`: ``Authorization``,
``Cookie``, ``Set-Cookie``, ``X-Api-Key``...), whatever the variables say.

Only recorded spans get them: a request the sampler dropped costs nothing more, and with no
header configured the request hooks skip this module entirely (one ``None`` check).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from litestar_omnii_obs._internal.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.types import Message, Scope
    from opentelemetry.trace import Span

    from litestar_omnii_obs._internal.config import ObservabilityConfig, TracingConfig
    from litestar_omnii_obs._internal.scrubbing import SecretScrubber

__all__ = ["REDACTED_HEADER", "HeaderCapture", "check_patterns"]

#: What a sanitized header's value becomes (OpenTelemetry's instrumentations write the same).
REDACTED_HEADER = "[REDACTED]"

#: Header names remembered per direction; clients choose names, so past this each new one is worked out again.
_MAX_REMEMBERED = 256

_FIELDS = ("capture_request_headers", "capture_response_headers", "sanitize_headers")


def check_patterns(tracing: TracingConfig) -> None:
    """Raise :class:`ConfigError` naming the field and the pattern that is not a regular expression."""
    for field in _FIELDS:
        for pattern in getattr(tracing, field):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError([(field, pattern, f"a regular expression ({exc})")]) from None


def _any_of(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


class _Direction:
    """What to do with each header name of one direction (request or response), learnt once per name."""

    __slots__ = ("_capture", "_prefix", "_sanitize", "_scrubber", "_seen")

    def __init__(
        self, capture: re.Pattern[str], prefix: str, sanitize: re.Pattern[str] | None, scrubber: SecretScrubber
    ) -> None:
        self._capture = capture
        self._prefix = prefix
        self._sanitize = sanitize
        self._scrubber = scrubber
        self._seen: dict[bytes, tuple[str, bool] | None] = {}

    def _learn(self, raw: bytes) -> tuple[str, bool] | None:
        """``(attribute key, whether the value is redacted)`` for a captured header name, else ``None``."""
        name = raw.decode("latin-1").lower()
        if self._capture.fullmatch(name) is None:
            return None
        sanitized = self._sanitize is not None and self._sanitize.search(name) is not None
        return self._prefix + name, sanitized or self._scrubber.is_secret(name)

    def attributes(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
        """The captured headers as span attributes, each value a list (a repeated header keeps every value)."""
        seen = self._seen
        found: dict[str, list[str]] = {}
        for raw, value in headers:
            if raw in seen:
                what = seen[raw]
            else:
                what = self._learn(raw)
                if len(seen) < _MAX_REMEMBERED:
                    seen[raw] = what
            if what is not None:
                key, redacted = what
                found.setdefault(key, []).append(REDACTED_HEADER if redacted else value.decode("latin-1"))
        return found


class HeaderCapture:
    """The configured header capture of one app; build it with :meth:`from_config` (``None``: nothing to do)."""

    __slots__ = ("_request", "_response")

    def __init__(self, tracing: TracingConfig, scrubber: SecretScrubber) -> None:
        redact = _any_of(tracing.sanitize_headers)
        request = _any_of(tracing.capture_request_headers)
        response = _any_of(tracing.capture_response_headers)
        self._request = None if request is None else _Direction(request, "http.request.header.", redact, scrubber)
        self._response = None if response is None else _Direction(response, "http.response.header.", redact, scrubber)

    @classmethod
    def from_config(cls, config: ObservabilityConfig, scrubber: SecretScrubber) -> HeaderCapture | None:
        """The capture ``config`` asks for, or ``None`` when no header is to be captured (or no span made)."""
        tracing = config.tracing
        if not config.tracing_active or not (tracing.capture_request_headers or tracing.capture_response_headers):
            return None
        return cls(tracing, scrubber)

    def request_attributes(self, scope: Scope) -> dict[str, list[str]]:
        """The request's captured headers as span attributes (``{}`` when none is configured)."""
        return {} if self._request is None else self._request.attributes(scope["headers"])

    def response_attributes(self, message: Message) -> dict[str, list[str]]:
        """The captured headers of an ``http.response.start`` message as span attributes."""
        headers: Iterable[tuple[bytes, bytes]] = message.get("headers") or ()  # type: ignore[assignment]
        return {} if self._response is None else self._response.attributes(headers)

    def on_request(self, scope: Scope, span: Span | None) -> None:
        """Put the request's captured headers on its server span, if that span is recorded."""
        if self._request is not None and span is not None and span.is_recording():
            span.set_attributes(self._request.attributes(scope["headers"]))

    def on_response(self, message: Message, span: Span | None) -> None:
        """Put the captured headers of ``http.response.start`` on the server span, if that span is recorded."""
        if self._response is not None and span is not None and span.is_recording():
            span.set_attributes(self.response_attributes(message))
