"""The server span's sampling decision, made before the SDK is asked for a span.

The SDK's ``Tracer.start_span`` costs 5-7 µs even for a span it drops (sampler objects,
attribute checks, context handling). Most requests in production are not sampled, and an
unsampled request needs only its ids (for ``X-Request-ID``, log lines and metric lines).
:class:`ServerSampling` applies the same rule as the configured built-in sampler (the six
``OTEL_TRACES_SAMPLER`` values) to the trace id: a dropped request gets a
:class:`DroppedSpan` with fresh ids directly (well under 1 µs), a sampled one is started by the
SDK with the very trace id the decision was made on (:class:`PresetTraceIds`), so the SDK's
sampler agrees and the decision is still one per trace.
"""

from __future__ import annotations

import random
import threading

from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from litestar_omnii_obs._internal.config import ObservabilityConfig

__all__ = ["DroppedSpan", "PresetTraceIds", "ServerSampling"]

_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_getrandbits = random.getrandbits


class PresetTraceIds(IdGenerator):
    """Random ids, except a root trace id chosen (in this thread) just before ``start_span``."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._local = threading.local()

    def preset(self, trace_id: int) -> None:
        self._local.trace_id = trace_id

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self._local, "trace_id", None)
        if trace_id is not None:
            self._local.trace_id = None
            return trace_id
        return self._random.generate_trace_id()


class ServerSampling:
    """The sampling rule from the config, applied here and handed to the SDK as its sampler.

    One rule, two users: the request hook applies it to a trace id before any span exists,
    and :meth:`sdk_sampler` gives the SDK the equivalent sampler for every other span (your
    spans, ``timed_operation``), so both decide the same for the same trace.
    """

    __slots__ = ("bound", "parent_based", "rate")

    def __init__(self, rate: float, parent_based: bool) -> None:
        self.rate = rate
        self.parent_based = parent_based
        self.bound = TraceIdRatioBased.get_bound_for_rate(rate)

    @classmethod
    def from_config(cls, config: ObservabilityConfig, consumers: bool) -> ServerSampling:
        """``OTEL_TRACES_SAMPLER`` (and ``_ARG``); unset, parent-based at the Sentry rate; nothing without consumers."""
        if not consumers:
            return cls(0.0, False)
        tracing = config.tracing
        name = tracing.sampler
        if name is None:
            return cls(config.sentry_traces_sample_rate, True)
        fixed = {"always_on": 1.0, "always_off": 0.0, "parentbased_always_on": 1.0, "parentbased_always_off": 0.0}
        arg = 1.0 if tracing.sampler_arg is None else tracing.sampler_arg
        return cls(fixed.get(name, arg), name.startswith("parentbased_"))

    @property
    def never(self) -> bool:
        """Whether no server span is ever recorded (rate 0 and not following the caller's flag)."""
        return self.rate <= 0.0 and not self.parent_based

    def sdk_sampler(self) -> Sampler:
        """The SDK sampler that decides as :meth:`sample_root` and :meth:`sampled` do."""
        root = ALWAYS_ON if self.rate >= 1.0 else ALWAYS_OFF if self.rate <= 0.0 else TraceIdRatioBased(self.rate)
        return ParentBased(root) if self.parent_based else root

    def sampled(self, parent: SpanContext) -> bool:
        """The decision for a span in the caller's trace: its flag if parent-based, else the trace-id rule."""
        if self.parent_based:
            return parent.trace_flags.sampled
        return parent.trace_id & _LIMIT < self.bound

    def sample_root(self) -> tuple[bool, int]:
        """The decision for a new trace: (sampled, its new trace id)."""
        trace_id = _getrandbits(128) or 1
        return trace_id & _LIMIT < self.bound, trace_id


class DroppedSpan(NonRecordingSpan):
    """What the SDK returns for a dropped span (fresh span id, the trace's id and state), made lazily.

    Most requests are not sampled and most of those never ask for their span's
    ``SpanContext``: the request hooks read :attr:`trace_id` and :attr:`span_id`
    directly, so the context object is built only when user code asks for it.
    """

    __slots__ = ("_lazy_context", "_state", "span_id", "trace_id")

    def __init__(self, trace_id: int, parent: SpanContext | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = _getrandbits(64) or 1
        self._state = None if parent is None else parent.trace_state
        self._lazy_context: SpanContext | None = None  # built on first use
        # NonRecordingSpan.__init__ is not called: its context is this class's, made on demand.

    def get_span_context(self) -> SpanContext:
        context = self._lazy_context
        if context is None:
            context = self._lazy_context = SpanContext(self.trace_id, self.span_id, False, _NOT_SAMPLED, self._state)
        return context

    def __repr__(self) -> str:
        return f"DroppedSpan(trace_id={self.trace_id:032x}, span_id={self.span_id:016x})"


def new_span_id() -> int:
    return _getrandbits(64) or 1
