"""Live and dead telemetry peers for the benchmark, all on 127.0.0.1.

The live ones are the test suite's real peers (OTLP receivers over HTTP, the default protocol, and over
gRPC; an HTTP Sentry ingest) with their request handling reduced to counting: they share the machine's
two cores with the measured server, so they neither decode every span into Python objects nor keep what
they received.
"""

from __future__ import annotations

import gzip
import json
import socket
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench.variants import Endpoints
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.otlp_receiver import OtlpReceiver
from tests.peers.sentry_ingest import SentryIngest

__all__ = ["CountingOtlpHttpReceiver", "CountingOtlpReceiver", "CountingSentryIngest", "Peers"]


class _ExportCounts:
    """What a counting collector keeps: spans received and metric exports, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.span_count = 0
        self.metric_exports = 0

    def _count(self, spans: int | None) -> None:
        """``spans`` of one trace export, or ``None`` for one metric export."""
        with self._lock:
            if spans is None:
                self.metric_exports += 1
            else:
                self.span_count += spans

    def reset(self) -> None:
        with self._lock:
            self.span_count = self.metric_exports = 0


class CountingOtlpReceiver(_ExportCounts, OtlpReceiver):
    """OTLP/gRPC: answers every Export OK and only counts spans and metric exports."""

    def _handle(self, signal: Any, request: Any, context: Any) -> None:
        if signal == "traces":
            self._count(sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans))
        else:
            self._count(None)


class CountingOtlpHttpReceiver(_ExportCounts, OtlpHttpReceiver):
    """OTLP/HTTP: answers every POST 200 (an empty protobuf answer) and only counts spans and metric exports."""

    def _handle(self, handler: Any) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if handler.path.startswith("/v1/traces"):
            self._count(_count_otlp_http_spans(body, handler.headers.get("Content-Encoding")))
        else:
            self._count(None)
        handler.respond(200, b"", {})


class CountingSentryIngest(SentryIngest):
    """Answers 200 to everything and only counts: envelopes, and spans POSTed to Sentry's OTLP endpoint.

    Envelopes are neither decompressed nor parsed; an OTLP/HTTP body (``/api/<project>/integration/otlp/...``)
    is decoded only to count its spans.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.envelope_count = 0
        self.otlp_span_count = 0

    def _handle(self, handler: Any) -> None:
        body = handler.read_body()
        if "/otlp" not in handler.path:
            with self._lock:
                self.envelope_count += 1
            handler.respond(200, {"id": None}, {})
            return
        spans = _count_otlp_http_spans(body, handler.headers.get("Content-Encoding"))
        with self._lock:
            self.otlp_span_count += spans
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/x-protobuf")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    def start(self) -> Self:
        super().start()
        # A sender that goes away mid-connection (a server being stopped) is expected here: no tracebacks.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[union-attr, method-assign]
        return self

    def reset(self) -> None:
        with self._lock:
            self.envelope_count = self.otlp_span_count = 0


def _count_otlp_http_spans(body: bytes, encoding: str | None) -> int:
    """Spans in an OTLP/HTTP ExportTraceServiceRequest (protobuf, or JSON); 0 if it cannot be read."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        if encoding and encoding.strip().lower() == "gzip":
            body = gzip.decompress(body)
        if body[:1] == b"{":
            data = json.loads(body)
            return sum(
                len(ss.get("spans", ())) for rs in data.get("resourceSpans", ()) for ss in rs.get("scopeSpans", ())
            )
        request = ExportTraceServiceRequest.FromString(body)
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    except Exception:
        return 0


class Peers:
    """Live OTLP receivers (HTTP and gRPC), a live Sentry ingest, a port where nothing listens, a scratch dir."""

    def __init__(self) -> None:
        self.otlp = CountingOtlpHttpReceiver()
        self.otlp_grpc = CountingOtlpReceiver()
        self.sentry = CountingSentryIngest()
        # Bound but never listening: connections are refused, and no other process can take the port.
        self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tmp = tempfile.TemporaryDirectory(prefix="omnii-bench-")
        self.workdir = Path(self._tmp.name)

    def start(self) -> Self:
        self._dead.bind(("127.0.0.1", 0))
        self.otlp.start()
        self.otlp_grpc.start()
        self.sentry.start()
        return self

    def stop(self) -> None:
        self.otlp.stop()
        self.otlp_grpc.stop()
        self.sentry.stop()
        self._dead.close()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def dead_port(self) -> int:
        port: int = self._dead.getsockname()[1]
        return port

    def endpoints(self, workdir: Path | None = None) -> Endpoints:
        return Endpoints(
            otlp=self.otlp.endpoint,
            otlp_grpc=self.otlp_grpc.endpoint,
            dsn=self.sentry.dsn,
            dead_otlp=f"http://127.0.0.1:{self.dead_port}",
            dead_dsn=f"http://{self.sentry.public_key}@127.0.0.1:{self.dead_port}/{self.sentry.project_id}",
            workdir=workdir or self.workdir,
        )

    def reset(self) -> None:
        self.otlp.reset()
        self.otlp_grpc.reset()
        self.sentry.reset()

    def counts(self) -> dict[str, int]:
        """What reached the peers since the last reset: OTLP spans, Sentry envelopes, spans at Sentry's OTLP."""
        return {
            "spans": self.otlp.span_count + self.otlp_grpc.span_count,
            "sentry": self.sentry.envelope_count,
            "sentry spans": self.sentry.otlp_span_count,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
