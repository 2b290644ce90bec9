"""OTLP trace transports: gRPC and HTTP (``http/protobuf``), both taking ready-made request bytes.

Both send the bytes :mod:`.encoding` produced as they are (no protobuf objects, no SDK
private hooks) and share one interface, ``send(body, spans) -> bool``: it never raises,
takes at most about ``timeout`` seconds, and leaves outage handling (log once, back off,
drop and count, honour the server's ``Retry-After``, count the spans a server refuses in an
accepted request) to the transport's
:class:`~.health.EndpointHealth`. Credentials in an endpoint URL (``user:password@``) are
sent as HTTP Basic authorization, never kept in the URL, and never logged.
"""

from __future__ import annotations

import base64
import gzip
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

import certifi
import grpc  # type: ignore[import-untyped]
import urllib3
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from litestar_omnii_obs.config import redact_url
from litestar_omnii_obs.otlp.health import EndpointHealth, parse_retry_after, sentry_rate_limit

__all__ = ["Compression", "GrpcTransport", "HttpTransport", "Transport", "split_credentials"]


Compression = Literal["gzip", "none"]
TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
_GZIP_LEVEL = 1  # protobuf spans compress about 9x at level 1 too; level 6 costs 3x the CPU for 2% smaller bodies


def _user_agent() -> str:
    try:
        return f"OTel-OTLP-Exporter-Python litestar-omnii-obs/{version('litestar-omnii-obs')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "OTel-OTLP-Exporter-Python litestar-omnii-obs"


USER_AGENT = _user_agent()


def split_credentials(url: str) -> tuple[SplitResult, str | None]:
    """``url`` without its user-info, and that user-info as an ``Authorization: Basic`` value (or ``None``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return parts, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return parts._replace(netloc=host), f"Basic {token}"


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    reason: str = ""
    retry_after: float | None = None  # failed: how long the server asked us to wait
    pause: float | None = None  # ok: the server accepted this one but limits what follows
    refused: int = 0  # ok: spans the server refused all the same (OTLP partial success)
    message: str = ""  # ok: the server's reason for refusing them, or a warning


def _partial_success(response: bytes) -> tuple[int, str]:
    """An ``ExportTraceServiceResponse``'s partial success: (spans refused, the server's message)."""
    if not response:
        return 0, ""
    try:
        partial = ExportTraceServiceResponse.FromString(response).partial_success
    except DecodeError:  # not an OTLP answer (a proxy's page): nothing to learn from it
        return 0, ""
    return partial.rejected_spans, partial.error_message


def _describe(exc: BaseException) -> str:
    """A short reason for a failed send, free of URLs (the innermost OS error, else the type)."""
    seen: set[int] = set()
    timed_out = False
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()  # "connection refused", "name or service not known"
        # urllib3's NewConnectionError subclasses its ConnectTimeoutError without being a timeout.
        if isinstance(current, TimeoutError | urllib3.exceptions.TimeoutError) and not isinstance(
            current, urllib3.exceptions.NewConnectionError
        ):
            timed_out = True
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)
    return "timed out" if timed_out else type(exc).__name__


class Transport(ABC):
    """Sends OTLP request bytes to one endpoint; never raises, bounded by ``timeout``.

    Why one interface: the fan-out exporter treats a collector over gRPC, a collector over
    HTTP and Sentry alike, and the outage behaviour lives in one place (:attr:`health`).
    """

    def __init__(self, target: str, timeout: float, initial_backoff: float, max_backoff: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        #: The endpoint as logs show it (credentials redacted).
        self.target = target
        self.timeout = timeout
        #: Outage state: back-off, rate limits, the count of dropped spans.
        self.health = EndpointHealth(target, initial_backoff=initial_backoff, max_backoff=max_backoff)
        self._closed = False

    def send(self, body: bytes, spans: int = 0) -> bool:
        """Send one request holding ``spans`` spans; ``True`` if the endpoint accepted it.

        While the endpoint is backing off or rate-limited nothing is sent and the spans are
        counted as dropped.
        """
        if self._closed or not self.health.ready():
            self.health.drop(spans)
            return False
        try:
            outcome = self._post(body)
        except Exception as exc:  # never raise into the span processor's worker
            outcome = _Outcome(False, _describe(exc))
        if outcome.ok:
            self.health.succeeded(outcome.pause)
            if outcome.refused or outcome.message:
                self.health.refused(outcome.refused, outcome.message)
        else:
            self.health.failed(outcome.reason, spans, outcome.retry_after)
        return outcome.ok

    @abstractmethod
    def _post(self, body: bytes) -> _Outcome: ...

    def close(self) -> None:
        """Release connections; later sends fail (and count) without touching the network."""
        self._closed = True


class HttpTransport(Transport):
    """OTLP/HTTP: a POST of ``application/x-protobuf`` through urllib3 (already here via sentry-sdk).

    ``url`` is the full signal URL (``.../v1/traces``, or Sentry's OTLP traces URL). One
    kept-alive connection: only the span processor's worker thread sends.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        compression: Compression = "gzip",
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        parts, basic = split_credentials(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
        super().__init__(redact_url(url) or url, timeout, initial_backoff, max_backoff)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._gzip = compression == "gzip"
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._headers.update(headers or {})
        if basic is not None and not any(key.lower() == "authorization" for key in self._headers):
            self._headers["Authorization"] = basic  # an explicit Authorization header wins
        options: dict[str, Any] = {
            "maxsize": 1,
            "block": False,
            "retries": False,
            "timeout": urllib3.Timeout(total=timeout),
        }
        if parts.scheme == "https":
            options["ca_certs"] = certifi.where()  # the CA bundle sentry-sdk and requests use
        self._pool = urllib3.connection_from_url(parts.geturl(), **options)

    def _post(self, body: bytes) -> _Outcome:
        data = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0) if self._gzip else body
        response = self._pool.urlopen(
            "POST",
            self._path,
            body=data,
            headers=self._headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=True,
        )
        status = response.status
        headers = response.headers
        limited = sentry_rate_limit(headers.get("X-Sentry-Rate-Limits"))
        if 200 <= status < 300:
            protobuf = headers.get("Content-Type", "").startswith("application/x-protobuf")
            refused, message = _partial_success(response.data) if protobuf else (0, "")
            return _Outcome(True, pause=limited, refused=refused, message=message)
        retry_after = limited if limited is not None else parse_retry_after(headers.get("Retry-After"))
        return _Outcome(False, f"HTTP {status}", retry_after)

    def close(self) -> None:
        super().close()
        self._pool.close()


def _identity(data: bytes) -> bytes:
    return data


class GrpcTransport(Transport):
    """OTLP/gRPC: a generic unary call to ``TraceService/Export`` sending the request bytes as they are.

    TLS for ``https`` endpoints and for endpoints without a scheme, plaintext for ``http``
    (the SDK exporter's rule); ``insecure`` overrides it. Headers go as call metadata.
    grpc channels reconnect by themselves; after ``UNAVAILABLE`` the channel is also
    rebuilt, so a restarted collector is reached on the first attempt after the back-off.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        compression: Compression = "none",
        insecure: bool | None = None,
        credentials: Any = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        # "host:port" has no scheme; parsed as is, "user:pw@host" would read as scheme "user".
        url = endpoint if "://" in endpoint else f"//{endpoint}"
        parts, basic = split_credentials(url)
        target = (redact_url(url) or url).removeprefix("//")
        if not parts.hostname:
            raise ValueError(f"no host in gRPC endpoint {target!r}")
        super().__init__(target, timeout, initial_backoff, max_backoff)
        self._address = parts.netloc
        self._insecure = parts.scheme == "http" if insecure is None else insecure
        if parts.scheme == "https":
            self._insecure = False
        self._credentials = credentials
        metadata = [(key.lower(), value) for key, value in (headers or {}).items()]
        if basic is not None and not any(key == "authorization" for key, _ in metadata):
            metadata.append(("authorization", basic))
        self._metadata = tuple(metadata)
        self._compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        self._lock = threading.Lock()  # a rebuild after UNAVAILABLE vs close() from another thread
        self._channel: Any = None
        self._call: Any = None
        self._open()

    def _open(self) -> None:
        options = [
            ("grpc.primary_user_agent", USER_AGENT),
            # grpc's own reconnect back-off grows to 120 s by default; ours decides when to try.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if self._insecure:
            channel = grpc.insecure_channel(self._address, options=options, compression=self._compression)
        else:
            credentials = self._credentials or grpc.ssl_channel_credentials()
            channel = grpc.secure_channel(self._address, credentials, options=options, compression=self._compression)
        self._channel = channel
        self._call = channel.unary_unary(
            TRACE_EXPORT_METHOD, request_serializer=_identity, response_deserializer=_identity
        )

    def _post(self, body: bytes) -> _Outcome:
        try:
            response = self._call(body, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            return self._failure(error)
        refused, message = _partial_success(response)
        return _Outcome(True, refused=refused, message=message)

    def _failure(self, error: Any) -> _Outcome:
        code = error.code() if callable(getattr(error, "code", None)) else None
        name = getattr(code, "name", "UNKNOWN")
        retry_after: float | None = None
        try:
            trailers = dict(error.trailing_metadata() or ())
        except Exception:
            trailers = {}
        info = trailers.get(_RETRY_INFO_KEY)
        if isinstance(info, bytes):
            delay = RetryInfo.FromString(info).retry_delay
            retry_after = delay.seconds + delay.nanos / 1e9
        if code == grpc.StatusCode.UNAVAILABLE:
            with self._lock:
                if not self._closed:
                    self._channel.close()
                    self._open()
        reason = {"UNAVAILABLE": "unavailable", "DEADLINE_EXCEEDED": "timed out"}.get(name, f"gRPC {name}")
        return _Outcome(False, reason, retry_after)

    def close(self) -> None:
        with self._lock:
            super().close()
            self._channel.close()
