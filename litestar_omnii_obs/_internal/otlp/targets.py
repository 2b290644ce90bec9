"""Where spans go: an OTLP collector (every span) and Sentry's OTLP endpoint (the traces under a rate).

A target is a transport plus a rule for which spans it takes. Sentry's rule is the package's
one trace-id ratio rule (:func:`~litestar_omnii_obs._internal.sampling.under_ratio`,
OpenTelemetry's ``TraceIdRatioBased`` test), so what Sentry gets is a subset of what a
ratio-sampled collector gets, and every trace goes to Sentry whole or not at all whatever
process made its spans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from litestar_omnii_obs._internal.config import OtlpProtocol
from litestar_omnii_obs._internal.health import PROBE_INTERVAL, PeerHealth
from litestar_omnii_obs._internal.otlp.transports import (
    MAX_KEPT,
    Compression,
    HealthLabels,
    OtlpHttpTransport,
    OtlpTransport,
)
from litestar_omnii_obs._internal.sampling import ratio_bound, under_ratio

__all__ = ["CollectorTarget", "OtlpProtocol", "SentryTarget", "Target", "collector_transport", "signal_url"]


def signal_url(endpoint: str | None, signal_endpoint: str | None, signal: str) -> str:
    """The OTLP/HTTP URL of ``signal`` (``traces``, ``metrics``) by the OTLP exporter spec's rules.

    A signal-specific endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is used as is; the
    generic one (``OTEL_EXPORTER_OTLP_ENDPOINT``) gets ``v1/<signal>`` appended to its path.
    """
    if signal_endpoint:
        return signal_endpoint
    if not endpoint:
        raise ValueError(f"no OTLP endpoint for {signal}")
    parts = urlsplit(endpoint)
    return parts._replace(path=f"{parts.path.rstrip('/')}/v1/{signal}").geturl()


def collector_transport(
    signal: Literal["traces", "metrics"],
    endpoint: str | None,
    signal_endpoint: str | None,
    protocol: OtlpProtocol,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    compression: Compression = "none",
    insecure: bool | None = None,
    credentials: Any = None,
    labels: HealthLabels | None = None,
    probe_interval: float = PROBE_INTERVAL,
    max_kept: int = MAX_KEPT,
    max_backoff: float = 60.0,
) -> OtlpTransport:
    """The transport to a collector for ``signal``: over HTTP to the signal's URL (:func:`signal_url`),
    over gRPC to its ``Export`` method (only host and port count; grpcio is imported only here)."""
    if protocol == "grpc":
        from litestar_omnii_obs._internal.otlp.grpc_transport import EXPORT_METHODS, OtlpGrpcTransport

        address = signal_endpoint or endpoint
        if not address:
            raise ValueError(f"no OTLP endpoint for {signal}")
        return OtlpGrpcTransport(
            address,
            headers=headers,
            timeout=timeout,
            compression=compression,
            insecure=insecure,
            credentials=credentials,
            method=EXPORT_METHODS[signal],
            probe_interval=probe_interval,
            max_kept=max_kept,
            max_backoff=max_backoff,
            labels=labels,
        )
    if protocol == "http/protobuf":
        return OtlpHttpTransport(
            signal_url(endpoint, signal_endpoint, signal),
            headers=headers,
            timeout=timeout,
            compression=compression,
            probe_interval=probe_interval,
            max_kept=max_kept,
            max_backoff=max_backoff,
            labels=labels,
        )
    raise ValueError(f"unsupported OTLP protocol {protocol!r} (grpc or http/protobuf)")


class Target:
    """A transport and the share of traces it takes (``rate`` in [0, 1], by trace id).

    Why a rate per target: the collector takes every exported span, Sentry (billed per span)
    a fraction; the fan-out exporter encodes once and sends each target its spans.
    """

    def __init__(self, transport: OtlpTransport, rate: float = 1.0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be in [0, 1]")
        self.transport = transport
        self.rate = rate
        #: The bound of :func:`~litestar_omnii_obs._internal.sampling.under_ratio` for ``rate``.
        self.bound = ratio_bound(rate)

    @property
    def name(self) -> str:
        """The endpoint as logs show it (credentials redacted)."""
        return self.transport.target

    @property
    def health(self) -> PeerHealth:
        return self.transport.health

    @property
    def takes_all(self) -> bool:
        return self.rate >= 1.0

    def takes(self, trace_id: int) -> bool:
        """Whether spans of ``trace_id`` go to this target (the one trace-id ratio rule)."""
        return under_ratio(trace_id, self.bound)

    def choose(self, trace_ids: Sequence[int]) -> list[bool] | None:
        """Which of a batch's spans go here; ``None`` means all of them."""
        if self.takes_all:
            return None
        bound = self.bound
        return [under_ratio(trace_id, bound) for trace_id in trace_ids]

    def close(self) -> None:
        self.transport.close()


class CollectorTarget(Target):
    """An OpenTelemetry collector over OTLP/gRPC or OTLP/HTTP; it takes every span exported.

    ``endpoint`` is the generic endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``), ``traces_endpoint``
    the signal-specific one (used as is, and it wins). Over HTTP the generic one gets
    ``/v1/traces`` appended; over gRPC only the host and port count. ``compression``:
    ``none`` (default, as the OTLP exporters') or ``gzip``. gRPC needs the
    ``grpc`` extra (``ImportError`` naming it otherwise).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        traces_endpoint: str | None = None,
        protocol: OtlpProtocol = "http/protobuf",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        compression: Compression = "none",
        insecure: bool | None = None,
        credentials: Any = None,
        probe_interval: float = PROBE_INTERVAL,
        max_kept: int = MAX_KEPT,
        max_backoff: float = 60.0,
    ) -> None:
        transport = collector_transport(
            "traces",
            endpoint,
            traces_endpoint,
            protocol,
            headers=headers,
            timeout=timeout,
            compression=compression,
            insecure=insecure,
            credentials=credentials,
            probe_interval=probe_interval,
            max_kept=max_kept,
            max_backoff=max_backoff,
        )
        super().__init__(transport)
        self.protocol = protocol


class SentryTarget(Target):
    """Sentry's OTLP traces endpoint, for the traces whose id falls under ``rate``.

    Use :meth:`from_dsn`: it derives the URL and ``X-Sentry-Auth`` exactly as sentry-sdk's
    ``OTLPIntegration`` does. Requests go over HTTP, gzip-compressed; Sentry's
    ``X-Sentry-Rate-Limits`` is honoured (see :data:`~litestar_omnii_obs._internal.health.SENTRY_SPAN_CATEGORIES`).
    """

    def __init__(
        self,
        url: str,
        auth_header: str,
        *,
        rate: float = 1.0,
        timeout: float = 10.0,
        probe_interval: float = PROBE_INTERVAL,
        max_kept: int = MAX_KEPT,
        max_backoff: float = 60.0,
    ) -> None:
        transport = OtlpHttpTransport(
            url,
            headers={"X-Sentry-Auth": auth_header},
            timeout=timeout,
            compression="gzip",
            probe_interval=probe_interval,
            max_kept=max_kept,
            max_backoff=max_backoff,
            labels=HealthLabels("Sentry OTLP trace export", off_hint="OMNII_OBS_SENTRY_TRACES=off"),
        )
        super().__init__(transport, rate)

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        rate: float = 1.0,
        timeout: float = 10.0,
        probe_interval: float = PROBE_INTERVAL,
        max_kept: int = MAX_KEPT,
        max_backoff: float = 60.0,
    ) -> SentryTarget:
        """The target for ``dsn`` (raises ``sentry_sdk.utils.BadDsn`` for a malformed one)."""
        from sentry_sdk.consts import VERSION as SENTRY_SDK_VERSION  # sentry-sdk only when a DSN is set
        from sentry_sdk.consts import EndpointType
        from sentry_sdk.utils import Dsn

        auth = Dsn(dsn).to_auth(f"sentry.python/{SENTRY_SDK_VERSION}")
        return cls(
            auth.get_api_url(EndpointType.OTLP_TRACES),
            auth.to_header(),
            rate=rate,
            timeout=timeout,
            probe_interval=probe_interval,
            max_kept=max_kept,
            max_backoff=max_backoff,
        )
