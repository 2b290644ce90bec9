"""A real OTLP/HTTP collector stand-in: accepts ``POST /v1/traces`` and ``POST /v1/metrics`` on 127.0.0.1.

It speaks ``http/protobuf`` as the OTLP spec defines it (binary ``Export*ServiceRequest`` bodies,
``Content-Encoding: gzip`` or none, an ``Export*ServiceResponse`` back), decodes what it receives
into the same flat records as :class:`~tests.peers.otlp_receiver.OtlpReceiver` and mirrors its API
(``start``/``stop`` on the same port, ``fail_with``/``recover``, ``spans``, ``metric_points``,
``wait_for_*``). Misbehaviour is switchable at runtime: an HTTP status (429 with ``Retry-After``,
503...), a delay before answering (a slow collector), a stop and a restart on the same port.
Everything is thread-safe; the wait helpers never assert on wall-clock time.

Typical use::

    with OtlpHttpReceiver() as receiver:
        exporter = ...(endpoint=receiver.traces_url)
        spans = receiver.wait_for_spans(2)
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.peers.decode import MetricPoint, ReceivedSpan, Signal, decode_metrics, decode_spans
from tests.peers.http_peer import HttpPeer, TrackedHTTPServer

__all__ = ["HttpExportRequest", "OtlpHttpReceiver"]

_PATHS: dict[str, Signal] = {"/v1/traces": "traces", "/v1/metrics": "metrics"}


@dataclass(frozen=True)
class HttpExportRequest:
    """One POST: which signal, its headers (lower-case names), how many spans/points and how it was answered."""

    signal: Signal | None
    path: str
    headers: dict[str, str]
    content_encoding: str | None
    item_count: int
    status: int
    accepted: bool
    error: str | None


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: str | None


class _Server(TrackedHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, receiver: OtlpHttpReceiver, address: tuple[str, int]) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.receiver._handle(self)

    def do_GET(self) -> None:
        self.server.receiver._handle(self)

    def respond(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class OtlpHttpReceiver(HttpPeer):
    """An OTLP/HTTP trace + metrics collector on ``127.0.0.1``.

    ``port=None`` binds a free port on the first :meth:`start`; later starts (after :meth:`stop`) rebind the
    same port (a collector restart). Recorded data survives a restart (use :meth:`clear`).

    Knobs: :meth:`fail_with` (an HTTP status, optionally ``Retry-After``, for the next ``times`` requests or
    all), :meth:`recover`, and ``delay`` (seconds to wait before answering; :meth:`stop` cuts it short).
    Requests answered with an error are still decoded, their spans/points flagged ``accepted=False``.
    """

    def __init__(self, port: int | None = None, *, delay: float = 0.0) -> None:
        self.delay = delay
        super().__init__(port)
        self._spans: list[ReceivedSpan] = []
        self._points: list[MetricPoint] = []
        self._requests: list[HttpExportRequest] = []
        self._failure: _Failure | None = None
        self._failures_left: int | None = None
        #: When set, trace exports are answered 200 with a partial success refusing every span, with this message.
        self.refusal: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def _make_server(self, address: tuple[str, int]) -> _Server:
        return _Server(self, address)

    @property
    def traces_url(self) -> str:
        return f"{self.endpoint}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"{self.endpoint}/v1/metrics"

    # -- failure injection --------------------------------------------------------------------------

    def fail_with(self, status: int, *, times: int | None = None, retry_after: str | float | None = None) -> None:
        """Answer the next ``times`` requests (all, if ``None``) with ``status`` (and ``Retry-After``, if given)."""
        if 200 <= status < 300:
            raise ValueError("use recover() to answer 200")
        header = retry_after if retry_after is None or isinstance(retry_after, str) else f"{retry_after:g}"
        with self._cond:
            self._failure = _Failure(status, header)
            self._failures_left = times

    def recover(self) -> None:
        with self._cond:
            self._failure = None
            self._failures_left = None

    def _take_failure(self) -> _Failure | None:
        failure = self._failure
        if failure is not None and self._failures_left is not None:
            self._failures_left -= 1
            if self._failures_left <= 0:
                self._failure = None
                self._failures_left = None
        return failure

    # -- request handling ---------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        delay = self.delay
        path = handler.path.split("?", 1)[0]
        signal = _PATHS.get(path)
        encoding = (handler.headers.get("Content-Encoding") or "").strip().lower() or None
        error: str | None = None
        spans: list[ReceivedSpan] = []
        points: list[MetricPoint] = []
        with self._cond:
            failure = self._take_failure()
        status = 200 if failure is None else failure.status
        try:
            wire = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
            body = _decompress(encoding, wire)
            if handler.command != "POST" or signal is None:
                error, status = f"no OTLP endpoint at {handler.command} {path}", 404
            elif handler.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
                error, status = f"unsupported Content-Type {handler.headers.get('Content-Type')!r}", 415
            elif signal == "traces":
                spans = decode_spans(trace_service_pb2.ExportTraceServiceRequest.FromString(body), failure is None)
            else:
                points = decode_metrics(
                    metrics_service_pb2.ExportMetricsServiceRequest.FromString(body), failure is None
                )
        except Exception as exc:  # bad gzip, bad protobuf, a cut connection
            error, status = f"bad request: {exc!r}", 400
        accepted = error is None and failure is None
        record = HttpExportRequest(
            signal=signal,
            path=handler.path,
            headers={key.lower(): value for key, value in handler.headers.items()},
            content_encoding=encoding,
            item_count=len(spans) + len(points),
            status=status,
            accepted=accepted,
            error=error,
        )
        with self._cond:
            self._requests.append(record)
            self._spans.extend(spans)
            self._points.extend(points)
            self._arrived()
        if delay > 0 and self._stopping.wait(delay):
            handler.close_connection = True
            return
        headers: dict[str, str] = {}
        if failure is not None and failure.retry_after is not None:
            headers["Retry-After"] = failure.retry_after
        if accepted:
            refusal = self.refusal
            if signal == "traces" and refusal is not None:
                partial = trace_service_pb2.ExportTracePartialSuccess(rejected_spans=len(spans), error_message=refusal)
                response = trace_service_pb2.ExportTraceServiceResponse(partial_success=partial).SerializeToString()
            elif signal == "traces":
                response = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            else:
                response = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        else:
            response = (error or f"injected status {status}").encode()
        handler.respond(status, response, headers)

    # -- inspection ---------------------------------------------------------------------------------

    def spans(self, *, include_rejected: bool = False) -> list[ReceivedSpan]:
        with self._cond:
            return [s for s in self._spans if include_rejected or s.accepted]

    def span(self, name: str) -> ReceivedSpan:
        """The single accepted span called ``name`` (raises ``LookupError`` unless exactly one)."""
        found = [s for s in self.spans() if s.name == name]
        if len(found) != 1:
            raise LookupError(f"expected exactly one span {name!r}, got {len(found)}; received: {self.describe()}")
        return found[0]

    def metric_points(self, name: str | None = None, *, include_rejected: bool = False) -> list[MetricPoint]:
        with self._cond:
            return [p for p in self._points if (include_rejected or p.accepted) and (name is None or p.name == name)]

    def requests(self) -> list[HttpExportRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def requests_received(self) -> int:
        with self._cond:
            return len(self._requests)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._points.clear()
            self._requests.clear()
            self._arrived()

    def describe(self) -> str:
        with self._cond:
            requests = [f"{r.signal}:{r.status}:{r.item_count} {r.error or ''}".rstrip() for r in self._requests]
            names = [s.name + ("" if s.accepted else " (rejected)") for s in self._spans]
        return f"{len(requests)} request(s) {requests[:20]}; spans {names[:50]}"

    # -- waiting ------------------------------------------------------------------------------------

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        if n <= 0:
            return self.spans()
        return self.wait_for(lambda: spans if len(spans := self.spans()) >= n else None, timeout)

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> list[MetricPoint]:
        return self.wait_for(lambda: self.metric_points(name), timeout)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[HttpExportRequest]:
        if n <= 0:
            return self.requests()
        return self.wait_for(lambda: reqs if len(reqs := self.requests()) >= n else None, timeout)


def _decompress(encoding: str | None, wire: bytes) -> bytes:
    if encoding in (None, "identity"):
        return wire
    if encoding == "gzip":
        return gzip.decompress(wire)
    if encoding == "deflate":
        return zlib.decompress(wire)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")
