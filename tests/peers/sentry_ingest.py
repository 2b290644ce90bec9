"""A real Sentry ingest endpoint: accepts what sentry-sdk's HTTP transport POSTs to ``/api/<project>/envelope/``.

It is an independent implementation of the receiving side (stdlib HTTP server, own envelope parser): it
decompresses ``gzip`` / ``deflate`` (and ``br`` when the ``brotli`` module is importable), checks the DSN's
public key and project id like Sentry does, parses the envelope format (a JSON header line, then item-header /
payload pairs whose payload length comes from the item header's ``length`` or, without one, runs to the next
newline), and records every request -- including the exact decompressed bytes -- so tests can inspect events,
transactions and anything else that left the process.

It also serves the OTLP traces endpoint sentry-sdk's ``OTLPIntegration`` derives from the DSN
(``/api/<project>/integration/otlp/v1/traces/``): ``http/protobuf`` bodies (gzip or not) are decoded with
opentelemetry-proto into the same span records as the OTLP receivers, with the ``X-Sentry-Auth`` key checked.

Misbehaviour is switchable at runtime: ``delay`` (seconds before answering), ``status`` (e.g. 429 with
``retry_after``, or 500). Requests received while misbehaving are still recorded and counted, but flagged.
Everything is thread-safe; the wait helpers never assert on wall-clock time.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.peers.decode import ReceivedSpan, decode_spans
from tests.peers.http_peer import HttpPeer, TrackedHTTPServer

try:  # optional, like in sentry_sdk.transport
    import brotli  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

__all__ = [
    "EnvelopeError",
    "EnvelopeItem",
    "ParsedEnvelope",
    "ReceivedRequest",
    "SentryIngest",
    "parse_envelope",
]

_ENVELOPE_PATH = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?$")
#: ``Auth.get_api_url(EndpointType.OTLP_TRACES)`` in sentry-sdk.
_OTLP_TRACES_PATH = re.compile(r"^/api/(?P<project>[^/]+)/integration/otlp/v1/traces/?$")
# Item types whose payload is JSON (https://develop.sentry.dev/sdk/data-model/envelope-items/).
_NON_JSON_ITEM_TYPES = frozenset({"attachment", "replay_recording", "profile_chunk_binary", "statsd"})


# --------------------------------------------------------------------------- envelope format


class EnvelopeError(ValueError):
    """The body is not a well-formed Sentry envelope."""


@dataclass(frozen=True)
class EnvelopeItem:
    headers: dict[str, Any]
    payload: bytes
    #: The payload decoded as JSON when the item is a JSON item, else ``None``.
    json: Any

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))


@dataclass(frozen=True)
class ParsedEnvelope:
    headers: dict[str, Any]
    items: tuple[EnvelopeItem, ...]

    @property
    def event_id(self) -> str | None:
        value = self.headers.get("event_id")
        return None if value is None else str(value)

    def item_types(self) -> list[str]:
        return [item.type for item in self.items]


def _json_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise EnvelopeError(f"{what} is not JSON: {line[:200]!r}") from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} is not a JSON object: {line[:200]!r}")
    return value


def parse_envelope(body: bytes) -> ParsedEnvelope:
    """Parse a (decompressed) envelope body. Raises :class:`EnvelopeError` on malformed input."""
    pos = 0
    end = len(body)

    def read_line() -> bytes:
        nonlocal pos
        nl = body.find(b"\n", pos)
        stop = end if nl < 0 else nl
        line = body[pos:stop]
        pos = end if nl < 0 else nl + 1
        return line

    headers = _json_object(read_line(), "envelope header")
    items: list[EnvelopeItem] = []
    while pos < end:
        line = read_line()
        if not line.strip():  # tolerate blank lines / a trailing newline between items
            continue
        item_headers = _json_object(line, "item header")
        length = item_headers.get("length")
        if length is not None:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise EnvelopeError(f"bad item length {length!r}")
            if pos + length > end:
                raise EnvelopeError(f"item declares {length} bytes but only {end - pos} remain")
            payload = body[pos : pos + length]
            pos += length
            if pos < end:  # the payload is followed by a newline (or the end of the envelope)
                if body[pos : pos + 1] != b"\n":
                    raise EnvelopeError(f"item payload of length {length} not followed by a newline")
                pos += 1
        else:
            payload = read_line()
        items.append(EnvelopeItem(item_headers, payload, _decode_payload(item_headers, payload)))
    return ParsedEnvelope(headers, tuple(items))


def _decode_payload(headers: dict[str, Any], payload: bytes) -> Any:
    content_type = str(headers.get("content_type", "application/json"))
    if headers.get("type") in _NON_JSON_ITEM_TYPES or "json" not in content_type:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


# --------------------------------------------------------------------------- received requests


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as received.

    ``raw_body`` is the decompressed body (the wire bytes if they could not be decompressed). ``status`` and
    ``delay`` are how the ingest was configured to answer it; ``accepted`` means it was stored like a real Sentry
    would (2xx and a valid envelope); ``flagged`` means the ingest was misbehaving (non-2xx, a delay) or the
    request itself was bad.
    """

    method: str
    path: str
    project_id: str | None
    headers: dict[str, str]
    content_encoding: str | None
    wire_body: bytes
    raw_body: bytes
    envelope: ParsedEnvelope | None
    error: str | None
    status: int
    delay: float
    accepted: bool
    flagged: bool
    #: Spans of an OTLP traces request (decoded even when answered with an error), else ``None``.
    otlp_spans: tuple[ReceivedSpan, ...] | None = None

    @property
    def sentry_key(self) -> str | None:
        """The ``sentry_key`` of the ``X-Sentry-Auth`` header, if any."""
        return _auth_key(self.headers.get("x-sentry-auth", ""))


def _auth_key(auth: str) -> str | None:
    for part in auth.removeprefix("Sentry ").split(","):
        key, _, value = part.strip().partition("=")
        if key == "sentry_key":
            return value
    return None


class _Server(TrackedHTTPServer):
    daemon_threads = False  # so server_close() joins every handler thread
    block_on_close = True

    def __init__(self, ingest: SentryIngest, address: tuple[str, int]) -> None:
        self.ingest = ingest
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like the real thing (urllib3 pools connections)
    timeout = 10  # idle keep-alive connections are dropped after this

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access log
        pass

    def do_POST(self) -> None:
        self.server.ingest._handle(self)

    def do_GET(self) -> None:
        self.server.ingest._handle(self)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def respond(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.respond_bytes(status, json.dumps(body).encode(), headers, "application/json")

    def respond_bytes(
        self, status: int, data: bytes, headers: dict[str, str], content_type: str = "application/x-protobuf"
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. while we were "slow") or the ingest is stopping
            self.close_connection = True


# --------------------------------------------------------------------------- the ingest


class SentryIngest(HttpPeer):
    """A Sentry envelope endpoint on ``127.0.0.1``; point an SDK at :attr:`dsn`.

    Runtime knobs (plain attributes, read once per request): ``status`` (default 200), ``delay`` (seconds to
    wait before answering, default 0), ``retry_after`` (``Retry-After`` header sent with 429, default 60;
    ``None`` omits it), ``rate_limits`` (an ``X-Sentry-Rate-Limits`` header value to send, default none).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        public_key: str = "publickey",
        project_id: str | int = 42,
        status: int = 200,
        delay: float = 0.0,
        retry_after: float | None = 60,
        rate_limits: str | None = None,
    ) -> None:
        self.public_key = public_key
        self.project_id = str(project_id)
        self.status = status
        self.delay = delay
        self.retry_after = retry_after
        self.rate_limits = rate_limits
        super().__init__(port)
        self._requests: list[ReceivedRequest] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    def _make_server(self, address: tuple[str, int]) -> _Server:
        return _Server(self, address)

    @property
    def url(self) -> str:
        return self.endpoint

    @property
    def dsn(self) -> str:
        return f"http://{self.public_key}@127.0.0.1:{self.port}/{self.project_id}"

    @property
    def envelope_url(self) -> str:
        return f"{self.url}/api/{self.project_id}/envelope/"

    # -- request handling ---------------------------------------------------------------------------

    def _sentry_key(self, handler: _Handler, query: dict[str, list[str]]) -> str | None:
        auth = handler.headers.get("X-Sentry-Auth", "")
        if auth:
            return _auth_key(auth)
        keys = query.get("sentry_key")
        return keys[0] if keys else None

    def _decompress(self, encoding: str | None, wire: bytes) -> bytes:
        if encoding in (None, "", "identity"):
            return wire
        if encoding == "gzip":
            return gzip.decompress(wire)
        if encoding == "deflate":
            return zlib.decompress(wire)
        if encoding == "br" and brotli is not None:
            return bytes(brotli.decompress(wire))
        raise EnvelopeError(f"unsupported Content-Encoding {encoding!r}")

    def _decode_body(self, encoding: str | None, wire: bytes) -> bytes:
        try:
            return self._decompress(encoding, wire)
        except EnvelopeError:
            raise
        except Exception as exc:  # gzip.BadGzipFile, zlib.error, brotli.error, EOFError, ...
            raise EnvelopeError(f"could not decode {encoding} body: {exc!r}") from exc

    def _handle(self, handler: _Handler) -> None:
        status, delay = self.status, self.delay
        retry_after, rate_limits = self.retry_after, self.rate_limits
        split = urlsplit(handler.path)
        match = _ENVELOPE_PATH.match(split.path)
        otlp = _OTLP_TRACES_PATH.match(split.path)
        match = match or otlp
        project_id = match.group("project") if match else None
        otlp_spans: list[ReceivedSpan] | None = None
        encoding = handler.headers.get("Content-Encoding")
        encoding = encoding.strip().lower() if encoding else None
        error: str | None = None
        envelope: ParsedEnvelope | None = None
        try:
            wire = handler.read_body()
        except (OSError, ValueError) as exc:
            wire, error = b"", f"could not read body: {exc!r}"
        raw = wire
        if error is None:
            try:
                raw = self._decode_body(encoding, wire)
                if handler.command != "POST" or match is None:
                    error = f"not an envelope endpoint: {handler.command} {split.path}"
                elif project_id != self.project_id:
                    error = f"unknown project {project_id!r}"
                elif self._sentry_key(handler, parse_qs(split.query)) != self.public_key:
                    error = "missing or wrong sentry_key"
                elif otlp is not None:
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
                    otlp_spans = decode_spans(request, 200 <= status < 300)
                else:
                    envelope = parse_envelope(raw)
            except EnvelopeError as exc:
                error = f"bad envelope: {exc}"
            except DecodeError as exc:
                error = f"bad OTLP request: {exc}"
        if error is not None:
            status = 404 if error.startswith(("not an envelope", "unknown project")) else 400
            if error.startswith("missing or wrong"):
                status = 401
        accepted = error is None and 200 <= status < 300
        record = ReceivedRequest(
            method=handler.command,
            path=handler.path,
            project_id=project_id,
            headers={key.lower(): value for key, value in handler.headers.items()},
            content_encoding=encoding,
            wire_body=wire,
            raw_body=raw,
            envelope=envelope,
            error=error,
            status=status,
            delay=delay,
            accepted=accepted,
            flagged=not accepted or delay > 0,
            otlp_spans=None if otlp_spans is None else tuple(otlp_spans),
        )
        with self._cond:  # recorded on receipt, so a pending (delayed) request is already visible
            self._requests.append(record)
            self._arrived()

        if delay > 0 and self._stopping.wait(delay):
            handler.close_connection = True
            return
        headers: dict[str, str] = {}
        if status == 429 and retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if rate_limits is not None:
            headers["X-Sentry-Rate-Limits"] = rate_limits
        if accepted and otlp is not None:
            handler.respond_bytes(status, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(), headers)
            return
        if accepted:
            body: dict[str, Any] = {"id": envelope.event_id if envelope else None}
        else:
            body = {"detail": error or f"injected status {status}"}
        handler.respond(status, body, headers)

    # -- inspection ---------------------------------------------------------------------------------

    def requests(self) -> list[ReceivedRequest]:
        """Every request received, accepted or not, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def requests_received(self) -> int:
        with self._cond:
            return len(self._requests)

    @property
    def requests_flagged(self) -> int:
        with self._cond:
            return sum(1 for r in self._requests if r.flagged)

    def envelopes(self, *, include_rejected: bool = False) -> list[ParsedEnvelope]:
        """Parsed envelopes of accepted requests (plus those answered with an error, if ``include_rejected``)."""
        return [r.envelope for r in self.requests() if r.envelope is not None and (r.accepted or include_rejected)]

    def items(self, item_type: str | None = None, *, include_rejected: bool = False) -> list[EnvelopeItem]:
        return [
            item
            for envelope in self.envelopes(include_rejected=include_rejected)
            for item in envelope.items
            if item_type is None or item.type == item_type
        ]

    def events(self, *, include_rejected: bool = False) -> list[dict[str, Any]]:
        """JSON payloads of ``event`` items (errors and messages)."""
        return [item.json for item in self.items("event", include_rejected=include_rejected)]

    def transactions(self, *, include_rejected: bool = False) -> list[dict[str, Any]]:
        """JSON payloads of ``transaction`` items."""
        return [item.json for item in self.items("transaction", include_rejected=include_rejected)]

    def otlp_spans(self, *, include_rejected: bool = False) -> list[ReceivedSpan]:
        """Spans received on the OTLP traces endpoint (accepted ones, plus refused ones if ``include_rejected``)."""
        return [
            span
            for r in self.requests()
            if r.otlp_spans is not None and (r.accepted or include_rejected)
            for span in r.otlp_spans
        ]

    def otlp_requests(self) -> list[ReceivedRequest]:
        """Every request to the OTLP traces endpoint, accepted or not."""
        return [r for r in self.requests() if _OTLP_TRACES_PATH.match(urlsplit(r.path).path)]

    def wait_for_otlp_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``n`` accepted OTLP spans arrived; return them all."""
        if n <= 0:
            return self.otlp_spans()
        return self.wait_for(lambda: spans if len(spans := self.otlp_spans()) >= n else None, timeout)

    @property
    def otlp_traces_url(self) -> str:
        """Where sentry-sdk's ``OTLPIntegration`` sends spans for :attr:`dsn`."""
        return f"{self.url}/api/{self.project_id}/integration/otlp/v1/traces/"

    def raw_bodies(self) -> list[bytes]:
        """The decompressed body of every request received (accepted, rejected or malformed)."""
        return [r.raw_body for r in self.requests()]

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()
            self._arrived()

    def describe(self) -> str:
        """A short human summary of everything received (used in timeout messages)."""
        parts = []
        for r in self.requests()[-20:]:
            kinds = r.envelope.item_types() if r.envelope else []
            if r.otlp_spans is not None:
                kinds = [f"otlp:{len(r.otlp_spans)} span(s)"]
            parts.append(f"{r.method} {r.path} -> {r.status}{' flagged' if r.flagged else ''} {kinds} {r.error or ''}")
        return f"{self.requests_received} request(s): " + "; ".join(parts)

    # -- waiting ------------------------------------------------------------------------------------

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` accepted error events arrived; return all accepted events."""
        if n <= 0:
            return self.events()
        return self.wait_for(lambda: events if len(events := self.events()) >= n else None, timeout)

    def wait_for_transactions(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        if n <= 0:
            return self.transactions()
        return self.wait_for(lambda: txs if len(txs := self.transactions()) >= n else None, timeout)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least ``n`` requests (of any kind) arrived; return them all."""
        if n <= 0:
            return self.requests()
        return self.wait_for(lambda: reqs if len(reqs := self.requests()) >= n else None, timeout)
