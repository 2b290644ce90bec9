"""The request's server span, recorded without the SDK's per-span machinery.

A sampled request's SERVER span goes through the SDK's ``Tracer.start_span`` and
``Span.end`` for about 17 µs: a second sampler call for a decision already made, every
attribute value checked under a lock, and a ``ReadableSpan`` copied at the end.
:class:`ServerSpan` implements OpenTelemetry's ``Span`` API (user code can still add
attributes, events, links and a status to the current span, and child spans nest under
it) and is itself the SDK ``ReadableSpan`` it hands, when the request ends, to the span
processors of the provider the plugin built: the same spans reach the same exporters, for
about 2 µs instead of 17 (measured by ``make bench``; the README's performance section
breaks the figures down). A processor the app adds to that provider once it runs gets
``on_start`` and ``on_end`` too (not the SDK's private ``_on_ending``). Not used with
sentry-sdk's span processor, which gets the SDK's own spans it is written against.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from litestar_omnii_obs._internal._compat import set_span_end, set_span_name, set_span_status

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.util.types import Attributes, AttributeValue

__all__ = ["ServerSpan", "ServerSpans"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)  # immutable: one for every span
_MAX_ITEMS = 128  # the SDK's default limit on attributes, events and links per span
_SCALARS = (str, bool, int, float)


def _valid(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return True
    return isinstance(value, Sequence) and all(isinstance(item, _SCALARS) for item in value)


class ServerSpans:
    """Starts :class:`ServerSpan` objects and hands each finished one to the processors."""

    def __init__(
        self, processors: Sequence[SpanProcessor], resource: Resource, scope: InstrumentationScope | None
    ) -> None:
        self.processors = tuple(processors)
        self.starting: tuple[SpanProcessor, ...] = ()  # added by the app: ours do nothing in on_start
        self.resource = resource
        self.scope = scope

    def add(self, processor: SpanProcessor) -> None:
        """A processor the app added to the provider: it sees every server span start and end, as the SDK's would."""
        self.starting += (processor,)
        self.processors += (processor,)

    def start(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        start_time: int | None = None,
        parent_context: Context | None = None,
    ) -> ServerSpan:
        """A started span; ``parent_context``: the context it was started in, for the app's processors."""
        state = None if parent is None else parent.trace_state
        context = SpanContext(trace_id, span_id, False, _SAMPLED, state)
        span = ServerSpan(self, name, context, parent, attributes, start_time)
        for processor in self.starting:
            processor.on_start(span, parent_context=parent_context)  # type: ignore[arg-type]  # an SDK Span, duck-typed
        return span


class ServerSpan(trace.Span, ReadableSpan):
    """A recording SERVER span, and the SDK ``ReadableSpan`` the processors get when it ends.

    Like the SDK's own ``Span`` it is both: built with ``ReadableSpan``'s public constructor
    over the attribute dict and event and link lists it then adds to, so ending it hands
    the span itself to the processors (no copy). The three fields that change after that
    (end time, status, name) are set through :mod:`litestar_omnii_obs._internal._compat`.
    """

    def __init__(
        self,
        spans: ServerSpans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        start_time: int | None = None,
    ) -> None:
        self._spans = spans
        self._span_context = context
        self._values = attributes  # the dicts and lists ReadableSpan reads, kept to add to
        self._event_list: list[Event] = []
        self._link_list: list[Link] = []
        self._recording = True
        ReadableSpan.__init__(
            self,
            name,
            context,
            parent,
            spans.resource,
            attributes,
            self._event_list,
            self._link_list,
            SpanKind.SERVER,
            None,
            _UNSET,
            time.time_ns() if start_time is None else start_time,
            None,
            spans.scope,
        )

    def get_span_context(self) -> SpanContext:
        return self._span_context

    def is_recording(self) -> bool:
        return self._recording

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self._recording or not key:
            return
        if not isinstance(value, _SCALARS):  # a sequence of scalars is kept as a tuple, anything else dropped
            if not _valid(value):
                return
            value = tuple(value)  # type: ignore[arg-type]
        values = self._values
        if key in values or len(values) < _MAX_ITEMS:
            values[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self._recording and len(self._event_list) < _MAX_ITEMS:
            clean = {k: v for k, v in (attributes or {}).items() if _valid(v)}
            self._event_list.append(Event(name, clean, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._recording and len(self._link_list) < _MAX_ITEMS and context.is_valid:
            self._link_list.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._recording:
            set_span_name(self, name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if not self._recording or self.status.status_code is StatusCode.OK:
            return  # as in the SDK: OK is final
        set_span_status(self, status if isinstance(status, Status) else Status(status, description))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The same ``exception`` event as the SDK's ``Span.record_exception``."""
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if not self._recording:
            return
        self._recording = False
        set_span_end(self, end_time or time.time_ns())
        for processor in self._spans.processors:
            processor.on_end(self)
