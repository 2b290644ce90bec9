"""OTLP/gRPC transport: a generic unary call carrying ready-made request bytes (the ``grpc`` extra).

Its own module so that grpcio (about 14 MiB of RSS with its channel and threads, 30 ms to import)
loads only when a protocol is ``grpc`` (issue 22); a missing grpcio says which extra to install.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from litestar_omnii_obs._internal.config import redact_url
from litestar_omnii_obs._internal.health import PROBE_INTERVAL
from litestar_omnii_obs._internal.otlp.transports import (
    GRPC_EXTRA_HINT,
    MAX_KEPT,
    USER_AGENT,
    Compression,
    HealthLabels,
    OtlpTransport,
    Outcome,
    partial_success,
    retry_delay,
    split_credentials,
)

try:
    import grpc  # type: ignore[import-untyped]
except ImportError as exc:  # a venv without the extra (tests/test_packaging.py)
    raise ImportError(f"OTLP over gRPC needs grpcio: {GRPC_EXTRA_HINT} (or use http/protobuf)") from exc

__all__ = ["EXPORT_METHODS", "OtlpGrpcTransport"]

#: Each signal's ``Export`` method.
EXPORT_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
#: gRPC codes for a request the server will never take (the others mean "down", "limited" or "try again").
_REJECTING_CODES = frozenset({"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED", "NOT_FOUND"})


def _identity(data: bytes) -> bytes:
    return data


def _grpc_metadata(headers: Mapping[str, str] | None, basic: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata: the headers with lowercase keys (gRPC requires them), the URL's credentials unless set."""
    metadata = [(key.lower(), value) for key, value in (headers or {}).items()]
    if basic is not None and not any(key == "authorization" for key, _ in metadata):
        metadata.append(("authorization", basic))
    return tuple(metadata)


class OtlpGrpcTransport(OtlpTransport):
    """OTLP/gRPC: a generic unary call to ``method`` (traces' ``Export`` by default) sending the bytes as they are.

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
        method: str = EXPORT_METHODS["traces"],
        probe_interval: float = PROBE_INTERVAL,
        max_backoff: float = 60.0,
        max_kept: int = MAX_KEPT,
        labels: HealthLabels | None = None,
    ) -> None:
        # "host:port" has no scheme; parsed as is, "user:pw@host" would read as scheme "user".
        url = endpoint if "://" in endpoint else f"//{endpoint}"
        parts, basic = split_credentials(url)
        target = (redact_url(url) or url).removeprefix("//")
        if not parts.hostname:
            raise ValueError(f"no host in gRPC endpoint {target!r}")
        super().__init__(target, timeout, probe_interval, max_backoff, max_kept, labels)
        self._address = parts.netloc
        self._insecure = parts.scheme == "http" if insecure is None else insecure
        if parts.scheme == "https":
            self._insecure = False
        self._credentials = credentials
        self._method = method
        self._metadata = _grpc_metadata(headers, basic)
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
        self._call = channel.unary_unary(self._method, request_serializer=_identity, response_deserializer=_identity)

    def _post(self, body: bytes) -> Outcome:
        try:
            response = self._call(body, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            return self._failure(error)
        refused, message = partial_success(response)
        return Outcome(True, refused=refused, message=message)

    def _failure(self, error: Any) -> Outcome:
        code = error.code() if callable(getattr(error, "code", None)) else None
        name = getattr(code, "name", "UNKNOWN")
        try:
            trailers = dict(error.trailing_metadata() or ())
        except Exception:
            trailers = {}
        info = trailers.get(_RETRY_INFO_KEY)
        retry_after = retry_delay(info) if isinstance(info, bytes) else None
        if code == grpc.StatusCode.UNAVAILABLE:
            with self._lock:
                if not self._closed:
                    self._channel.close()
                    self._open()
        reason = {"UNAVAILABLE": "unavailable", "DEADLINE_EXCEEDED": "timed out"}.get(name, f"gRPC {name}")
        limited = name == "RESOURCE_EXHAUSTED" or retry_after is not None
        rejected = name in _REJECTING_CODES and not limited
        return Outcome(False, reason, retry_after, limited=limited, rejected=rejected)

    def close(self) -> None:
        with self._lock:
            super().close()
            self._channel.close()
