"""The server span's sampling decision, made before any span is started.

The SDK's ``Tracer.start_span`` costs 5-7 µs even for a span it drops (sampler objects,
attribute checks, context handling). Most requests in production are not sampled, and an
unsampled request needs only its ids (for ``X-Request-ID``, log lines and metric lines).
:class:`ServerSampling` applies the same rule as the configured built-in sampler (the six
``OTEL_TRACES_SAMPLER`` values) to the trace id: a dropped request gets a
:class:`DroppedSpan` with fresh ids directly (well under 1 µs). A sampled one gets the very
trace id the decision was made on: as a :class:`~litestar_omnii_obs._internal.server_span.ServerSpan`
when the plugin's processors are all the provider has, else from the SDK's tracer with
that trace id preset (:class:`PresetTraceIds`), so the SDK's sampler agrees and the decision
is still one per trace. Every ratio is :func:`under_ratio`, the one trace-id rule.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from litestar_omnii_obs._internal.config import ObservabilityConfig, SamplingContext, TracesSampler

_logger = logging.getLogger("litestar_omnii_obs")

__all__ = ["DroppedSpan", "PresetTraceIds", "ServerSampling", "ratio_bound", "under_ratio"]

_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_getrandbits = random.getrandbits


def ratio_bound(rate: float) -> int:
    """The bound :func:`under_ratio` compares trace ids with for ``rate`` in [0, 1] (the SDK computes it)."""
    return TraceIdRatioBased.get_bound_for_rate(rate)


def under_ratio(trace_id: int, bound: int) -> bool:
    """The one trace-id ratio rule: OpenTelemetry's ``TraceIdRatioBased`` test (the id's low 64 bits under ``bound``).

    Every ratio decision uses it (the server span's, the SDK sampler's, Sentry's share in
    :mod:`.otlp.targets`), so a trace is kept whole whatever process decides, and Sentry's
    traces are a subset of the collector's whenever Sentry's rate is the lower.
    """
    return trace_id & _LIMIT < bound


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

    __slots__ = ("_sampler_failed", "bound", "never", "parent_based", "rate")

    def __init__(self, rate: float, parent_based: bool, *, never: bool = False) -> None:
        self.rate = rate
        self.parent_based = parent_based
        self.bound = ratio_bound(rate)
        #: No span is ever recorded, whatever a route's rule or the caller: nothing would receive it. A
        #: sampler that keeps none is not this: kept spans and routes with their own rate are still recorded.
        self.never = never
        self._sampler_failed = False

    @classmethod
    def from_config(cls, config: ObservabilityConfig, consumers: bool) -> ServerSampling:
        """``OTEL_TRACES_SAMPLER`` (and ``_ARG``); unset, parent-based at the Sentry rate; nothing without consumers."""
        if not consumers:
            return cls(0.0, False, never=True)
        tracing = config.tracing
        name = tracing.sampler
        if name is None:
            return cls(config.sentry_traces_sample_rate, True)
        fixed = {"always_on": 1.0, "always_off": 0.0, "parentbased_always_on": 1.0, "parentbased_always_off": 0.0}
        arg = 1.0 if tracing.sampler_arg is None else tracing.sampler_arg
        return cls(fixed.get(name, arg), name.startswith("parentbased_"))

    def sdk_sampler(self) -> Sampler:
        """The SDK sampler that decides as :meth:`sample_root` and :meth:`sampled` do."""
        root = ALWAYS_ON if self.rate >= 1.0 else ALWAYS_OFF if self.rate <= 0.0 else TraceIdRatioBased(self.rate)
        return ParentBased(root) if self.parent_based else root

    def sampled(self, parent: SpanContext) -> bool:
        """The decision for a span in the caller's trace: its flag if parent-based, else the trace-id rule."""
        if self.parent_based:
            return parent.trace_flags.sampled
        return under_ratio(parent.trace_id, self.bound)

    def sample_root(self) -> tuple[bool, int]:
        """The decision for a new trace: (sampled, its new trace id)."""
        trace_id = _getrandbits(128) or 1
        return under_ratio(trace_id, self.bound), trace_id

    def sample_joined(self, parent: Context) -> tuple[bool, int, SpanContext | None]:
        """The decision for a request that came with trace headers: (sampled, trace id, the caller's span context).

        Headers that hold no valid span context start a new trace, decided as any other root.
        """
        parent_context = trace.get_current_span(parent).get_span_context()
        if not parent_context.is_valid:
            sampled, trace_id = self.sample_root()
            return sampled, trace_id, None
        return self.sampled(parent_context), parent_context.trace_id, parent_context

    def decide(
        self,
        route_bound: int | None,
        sampler: TracesSampler | None,
        parent: Context | None,
        context: Callable[[SpanContext | None], SamplingContext],
    ) -> tuple[bool, int, SpanContext | None]:
        """The decision on a route with its own rule: the ``opt`` rate (``route_bound``) or the user's sampler.

        The route's rate replaces the configured one for new traces and ``False`` (bound 0) drops every
        request; a parent-based configuration still follows the caller. The user's ``sampler`` decides
        alone (it is told the caller's decision); a rate it returns is applied to the trace id, as every
        rate is, so Sentry's share (by trace id too) stays a subset. A sampler that raises is logged once
        and the configured rule decides.
        """
        parent_context = _valid_parent(parent)
        trace_id = parent_context.trace_id if parent_context is not None else _getrandbits(128) or 1
        if self.never:
            return False, trace_id, parent_context
        if route_bound is not None:
            return self._by_route(route_bound, trace_id, parent_context), trace_id, parent_context
        assert sampler is not None
        return self._by_sampler(sampler, context, trace_id, parent_context), trace_id, parent_context

    def _by_route(self, bound: int, trace_id: int, parent: SpanContext | None) -> bool:
        """The ``opt`` rate: ``False`` (bound 0) drops; a parent-based rule follows the caller."""
        if bound and parent is not None and self.parent_based:
            return parent.trace_flags.sampled
        return under_ratio(trace_id, bound)

    def _by_sampler(
        self,
        sampler: TracesSampler,
        context: Callable[[SpanContext | None], SamplingContext],
        trace_id: int,
        parent: SpanContext | None,
    ) -> bool:
        """The user's verdict: a bool, or a rate applied to the trace id; the configured rule if it raises
        or returns anything else (a rate outside [0, 1] is clamped)."""
        try:
            verdict = sampler(context(parent))
            if isinstance(verdict, bool):
                return verdict
            if not isinstance(verdict, int | float) or math.isnan(verdict):
                raise TypeError(f"traces_sampler returned {verdict!r}, not a bool or a rate in [0, 1]")
        except Exception:
            if not self._sampler_failed:
                self._sampler_failed = True
                _logger.exception(
                    "traces_sampler raised or returned neither a bool nor a rate; the configured sampler decides"
                    " (further errors not logged)"
                )
            return self.sampled(parent) if parent is not None else under_ratio(trace_id, self.bound)
        return under_ratio(trace_id, ratio_bound(min(max(float(verdict), 0.0), 1.0)))


def _valid_parent(parent: Context | None) -> SpanContext | None:
    """The caller's span context from extracted headers, if they held a valid one."""
    if parent is None:
        return None
    context = trace.get_current_span(parent).get_span_context()
    return context if context.is_valid else None


class DroppedSpan(NonRecordingSpan):
    """What the SDK returns for a dropped span (fresh span id, the trace's id and state), made lazily.

    Most requests are not sampled and most of those never ask for their span's
    ``SpanContext``: the request hooks read :attr:`trace_id` and :attr:`span_id`
    directly, so the context object is built only when user code asks for it.
    """

    __slots__ = ("_lazy_context", "parent", "span_id", "trace_id")

    def __init__(self, trace_id: int, parent: SpanContext | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = _getrandbits(64) or 1
        self.parent = parent  # the caller's span context, if any (its trace state; a kept span's parent)
        self._lazy_context: SpanContext | None = None  # built on first use
        # NonRecordingSpan.__init__ is not called: its context is this class's, made on demand.

    def get_span_context(self) -> SpanContext:
        context = self._lazy_context
        if context is None:
            context = self._lazy_context = SpanContext(
                self.trace_id,
                self.span_id,
                False,
                _NOT_SAMPLED,
                None if self.parent is None else self.parent.trace_state,
            )
        return context

    def __repr__(self) -> str:
        return f"DroppedSpan(trace_id={self.trace_id:032x}, span_id={self.span_id:016x})"


def new_span_id() -> int:
    return _getrandbits(64) or 1


def new_trace_id() -> int:
    return _getrandbits(128) or 1
