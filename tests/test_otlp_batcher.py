"""The span batcher against a real OTLP/HTTP collector: whole batches at once, the rest on schedule or at shutdown."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from litestar_omnii_obs._internal.otlp import CollectorTarget, FanOutSpanExporter
from litestar_omnii_obs._internal.otlp.batcher import SpanBatcher
from tests.conftest import wait_until
from tests.peers.otlp_http_receiver import OtlpHttpReceiver


@pytest.fixture
def collector() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


def _traced(batcher: SpanBatcher, spans: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "batcher-test"}), shutdown_on_exit=False)
    provider.add_span_processor(batcher)
    tracer = provider.get_tracer("batcher-test")
    for i in range(spans):
        tracer.start_span(f"span-{i}").end()


def test_full_batches_go_at_once_and_a_partial_one_waits_for_the_schedule_or_shutdown(
    collector: OtlpHttpReceiver,
) -> None:
    batcher = SpanBatcher(FanOutSpanExporter([CollectorTarget(collector.endpoint)]), max_batch=10, schedule_delay=60.0)
    _traced(batcher, 25)
    assert wait_until(lambda: len(collector.spans()) >= 20, timeout=10)
    time.sleep(0.5)  # a partial batch sent early would have arrived by now
    assert [r.item_count for r in collector.requests()] == [10, 10]
    batcher.shutdown()
    assert [r.item_count for r in collector.requests()] == [10, 10, 5]
    assert set(batcher.exporter.dropped().values()) == {0}


def test_a_partial_batch_goes_when_the_schedule_comes(collector: OtlpHttpReceiver) -> None:
    batcher = SpanBatcher(FanOutSpanExporter([CollectorTarget(collector.endpoint)]), max_batch=10, schedule_delay=0.2)
    try:
        _traced(batcher, 3)
        assert wait_until(lambda: len(collector.spans()) == 3, timeout=10)
        assert [r.item_count for r in collector.requests()] == [3]
    finally:
        batcher.shutdown()
