"""OTLP transports: HTTP (``http/protobuf``) here, gRPC in :mod:`.grpc_transport`; both take ready-made bytes.

Both send the bytes :mod:`.encoding` produced as they are (no protobuf objects, no SDK
private hooks) and share one interface, ``send(body, spans) -> bool``: it never raises,
each attempt takes at most about ``timeout`` seconds, and a peer that is down gets its
requests kept (bounded) and sent when a probe finds it back. When to try, what to log and
what was lost is the transport's :class:`~litestar_omnii_obs._internal.health.PeerHealth`'s job.
Credentials in an endpoint URL (``user:password@``) are sent as HTTP Basic authorization,
never kept in the URL, and never logged.
"""

from __future__ import annotations

import base64
import gzip
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit

import certifi
import urllib3

from litestar_omnii_obs._internal.config import OtlpCompression, redact_url
from litestar_omnii_obs._internal.health import (
    OUTAGE_OVERFLOW,
    PROBE_INTERVAL,
    REFUSED,
    STILL_QUEUED,
    Attempt,
    PeerHealth,
    deliver_in_order,
    describe_failure,
    parse_retry_after,
    sentry_rate_limit,
)

__all__ = [
    "GRPC_EXTRA_HINT",
    "Compression",
    "HealthLabels",
    "OtlpHttpTransport",
    "OtlpTransport",
    "Outcome",
    "split_credentials",
]


Compression = OtlpCompression
#: What to install for OTLP over gRPC (:mod:`.grpc_transport` says it when grpcio is missing).
GRPC_EXTRA_HINT = "pip install 'litestar-omnii-obs[grpc]'"
#: Spans a transport keeps for a peer that is down (the SDK's default span queue size).
MAX_KEPT = 2048
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


class HealthLabels(NamedTuple):
    """How the transport's outage and loss lines name what it sends (see :class:`PeerHealth`)."""

    kind: str = "OTLP trace export"
    unit: str = "span"
    off_hint: str = "OTEL_TRACES_EXPORTER=none"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result, as the peer gave it (what it means for the outage state is :class:`PeerHealth`'s)."""

    ok: bool
    reason: str = ""
    retry_after: float | None = None  # failed: how long the server asked us to wait
    limited: bool = False  # failed: the server is up but limits us (429, 503, RESOURCE_EXHAUSTED)
    rejected: bool = False  # failed: the server is up and refuses this request for good (other 4xx)
    pause: float | None = None  # ok: the server accepted this one but limits what follows
    refused: int = 0  # ok: spans the server refused all the same (OTLP partial success)
    message: str = ""  # ok: the server's reason for refusing them, or a warning


def _read_fields(data: bytes) -> dict[int, int | bytes]:
    """The top-level fields of a protobuf message (varints and length-delimited ones; the last of each wins).

    OTLP answers are two small messages (a partial success, gRPC's ``RetryInfo``): reading them by hand
    keeps protobuf out of the process (issue 22: about 3 MiB and 20 ms at start-up). Raises ``ValueError``
    for bytes that are not such a message.
    """
    fields: dict[int, int | bytes] = {}
    index, end = 0, len(data)

    def varint() -> int:
        nonlocal index
        value = shift = 0
        while True:
            if index >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = data[index]
            index += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while index < end:
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number] = varint()
        elif wire_type == 2:
            size = varint()
            if index + size > end:
                raise ValueError("truncated field")
            fields[number] = data[index : index + size]
            index += size
        elif wire_type in (1, 5):
            index += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"wire type {wire_type}")
    if index != end:
        raise ValueError("truncated field")
    return fields


def _int64(value: int | bytes) -> int:
    """A varint field read as protobuf's int64 (two's complement); 0 for a field of another wire type."""
    if not isinstance(value, int):
        return 0
    return value - (1 << 64) if value >= 1 << 63 else value


def partial_success(response: bytes) -> tuple[int, str]:
    """An OTLP ``Export*ServiceResponse``'s partial success: (items refused, the server's message).

    Traces and metrics share the layout: field 1 a message of (1: rejected count, 2: error message).
    A negative count (an int64 on the wire) reads as 0.
    """
    try:
        partial = _read_fields(response).get(1, b"")
        fields = _read_fields(partial) if isinstance(partial, bytes) else {}
        message = fields.get(2, b"")
        return (
            max(0, _int64(fields.get(1, 0))),
            message.decode("utf-8", "replace") if isinstance(message, bytes) else "",
        )
    except ValueError:  # not an OTLP answer (a proxy's page): nothing to learn from it
        return 0, ""


def retry_delay(retry_info: bytes) -> float | None:
    """Seconds in a ``google.rpc.RetryInfo`` (``retry_delay``: a Duration of int64 seconds and int32 nanos),
    if any; a negative one reads as 0."""
    try:
        delay = _read_fields(retry_info).get(1)
        if not isinstance(delay, bytes):
            return None
        fields = _read_fields(delay)
    except ValueError:
        return None
    return max(0.0, _int64(fields.get(1, 0)) + _int64(fields.get(2, 0)) / 1e9)


class OtlpTransport(ABC):
    """Sends OTLP request bytes to one endpoint; never raises, each attempt bounded by ``timeout``.

    Why one interface: the fan-out exporter treats a collector over gRPC, a collector over
    HTTP and Sentry alike, and the outage behaviour lives in one place (:attr:`health`).
    While the endpoint is down its requests are kept, up to ``max_kept`` spans (the oldest
    go first, counted), and sent oldest first once a probe succeeds. One thread sends at a time
    (the span batcher's worker, or the metric reader's); :meth:`abandon` may come from another.
    """

    def __init__(
        self,
        target: str,
        timeout: float,
        probe_interval: float,
        max_backoff: float,
        max_kept: int,
        labels: HealthLabels | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        #: The endpoint as logs show it (credentials redacted).
        self.target = target
        self.timeout = timeout
        #: Outage state: when to try, the counts of delivered and lost spans (or exports).
        self.health = PeerHealth(
            target, probe_interval=probe_interval, max_backoff=max_backoff, **(labels or HealthLabels())._asdict()
        )
        self.max_kept = max_kept
        self._kept: deque[tuple[bytes, int]] = deque()
        self._kept_spans = 0
        self._sending = 0  # spans in the request on the wire right now
        self._closed = False
        self._abandoned = False

    @property
    def kept(self) -> int:
        """Spans kept for a peer that is down, waiting for it to come back."""
        return self._kept_spans

    def send(self, body: bytes, spans: int = 0) -> bool:
        """Send one request holding ``spans`` spans (after any kept ones); ``True`` if it was accepted.

        While the endpoint is down or rate-limited the request is kept for later, not sent
        (:func:`~litestar_omnii_obs._internal.health.deliver_in_order`).
        """
        if self._closed:
            self.health.lose(spans, STILL_QUEUED)
            return False
        return deliver_in_order(self.health, self, (body, spans))

    # The four methods deliver_in_order drives (only the span processor's worker thread calls them).

    def oldest_kept(self) -> tuple[bytes, int] | None:
        return self._kept[0] if self._kept else None

    def forget_kept(self, item: tuple[bytes, int]) -> None:
        if self._kept and self._kept[0] is item:  # abandon() may have emptied it meanwhile
            self._kept.popleft()
            self._kept_spans -= item[1]

    def post_once(self, body: bytes) -> Outcome:
        """One request, once, whatever the outage state; never raises, nothing kept (metric exports)."""
        try:
            return self._post(body)
        except Exception as exc:
            return Outcome(False, describe_failure(exc))

    def attempt(self, item: tuple[bytes, int], *, kept: bool) -> Attempt:
        """One send, its outcome recorded on :attr:`health`.

        ``kept``: the request is the oldest kept one, still counted in :attr:`kept` while on the wire.
        """
        body, spans = item
        self._sending = 0 if kept else spans
        try:
            outcome = self.post_once(body)  # never raises into the span processor's worker
        finally:
            self._sending = 0
        if self._abandoned:
            return Attempt.ABANDONED
        health = self.health
        if outcome.ok:
            health.succeeded(spans - outcome.refused, outcome.pause)
            if outcome.refused or outcome.message:
                health.refused(outcome.refused, outcome.message)
            return Attempt.DELIVERED
        if outcome.rejected:
            health.lose(spans, f"{REFUSED} ({outcome.reason})")
            health.failed(outcome.reason)
            return Attempt.LOST
        health.failed(outcome.reason, retry_after=outcome.retry_after, limited=outcome.limited)
        return Attempt.DOWN

    def keep(self, item: tuple[bytes, int]) -> None:
        spans = item[1]
        if self._abandoned or spans <= 0:
            self.health.lose(spans, STILL_QUEUED)
            return
        self._kept.append(item)
        self._kept_spans += spans
        while self._kept_spans > self.max_kept and self._kept:
            _, oldest = self._kept.popleft()
            self._kept_spans -= oldest
            self.health.lose(oldest, OUTAGE_OVERFLOW)

    @abstractmethod
    def _post(self, body: bytes) -> Outcome: ...

    def retry_kept(self) -> None:
        """Send what is kept if the peer may be tried now (shutdown calls this before giving up on it)."""
        if self._kept and not self._closed:
            body, spans = self._kept.pop()  # resend the newest through send(), which sends the rest first
            self._kept_spans -= spans
            self.send(body, spans)

    def abandon(self) -> None:
        """Shutdown's bound is reached: count what is kept or on the wire as lost, send nothing more."""
        self._abandoned = True
        self.health.lose(self._kept_spans + self._sending, STILL_QUEUED)
        self._kept.clear()
        self._kept_spans = 0
        self._sending = 0

    def close(self) -> None:
        """Release connections; what is still kept is lost (counted), later sends count without sending."""
        if not self._abandoned:
            self.abandon()
        self._closed = True


def _http_headers(headers: Mapping[str, str] | None, basic: str | None, *, gzipped: bool) -> dict[str, str]:
    """Request headers: ours, then the caller's (which win), then the URL's credentials unless Authorization is set."""
    result = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
    if gzipped:
        result["Content-Encoding"] = "gzip"
    result.update(headers or {})
    if basic is not None and not any(key.lower() == "authorization" for key in result):
        result["Authorization"] = basic  # an explicit Authorization header wins
    return result


class OtlpHttpTransport(OtlpTransport):
    """OTLP/HTTP: a POST of ``application/x-protobuf`` through urllib3 (already here via sentry-sdk).

    ``url`` is the full signal URL (``.../v1/traces``, or Sentry's OTLP traces URL). One
    kept-alive connection (a second sender at the same moment gets a connection of its own).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        compression: Compression = "gzip",
        probe_interval: float = PROBE_INTERVAL,
        max_backoff: float = 60.0,
        max_kept: int = MAX_KEPT,
        labels: HealthLabels | None = None,
    ) -> None:
        parts, basic = split_credentials(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
        super().__init__(redact_url(url) or url, timeout, probe_interval, max_backoff, max_kept, labels)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._gzip = compression == "gzip"
        self._headers = _http_headers(headers, basic, gzipped=self._gzip)
        options: dict[str, Any] = {
            "maxsize": 1,
            "block": False,
            "retries": False,
            "timeout": urllib3.Timeout(total=timeout),
        }
        if parts.scheme == "https":
            options["ca_certs"] = certifi.where()  # the CA bundle sentry-sdk and requests use
        self._pool = urllib3.connection_from_url(parts.geturl(), **options)

    def _post(self, body: bytes) -> Outcome:
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
            refused, message = partial_success(response.data) if protobuf else (0, "")
            return Outcome(True, pause=limited, refused=refused, message=message)
        retry_after = limited if limited is not None else parse_retry_after(headers.get("Retry-After"))
        rate_limited = status in (429, 503) or retry_after is not None
        rejected = 400 <= status < 500 and not rate_limited and status not in (408,)
        return Outcome(False, f"HTTP {status}", retry_after, limited=rate_limited, rejected=rejected)

    def close(self) -> None:
        super().close()
        self._pool.close()
