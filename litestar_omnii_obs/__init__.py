"""Production observability for Litestar in one plugin: latency records, metrics, Sentry, tracing."""

from litestar_omnii_obs._internal.config import (
    ConfigError,
    LatencyConfig,
    MetricsConfig,
    ObservabilityConfig,
    SamplingContext,
    SentryConfig,
    TracingConfig,
)
from litestar_omnii_obs._internal.metrics import TimedOperation, flush_metrics, log_metric, timed_operation
from litestar_omnii_obs._internal.plugin import ObservabilityPlugin
from litestar_omnii_obs._internal.records import (
    ApiLatencyMetric,
    GraphQueryMetric,
    Metric,
    MetricRecord,
    OperationMetric,
    SyncMetric,
    SyncSource,
    TimedRecord,
    WebSocketMetric,
)
from litestar_omnii_obs._internal.reporting import capture_error

__all__ = [
    "ApiLatencyMetric",
    "ConfigError",
    "GraphQueryMetric",
    "LatencyConfig",
    "Metric",
    "MetricRecord",
    "MetricsConfig",
    "ObservabilityConfig",
    "ObservabilityPlugin",
    "OperationMetric",
    "SamplingContext",
    "SentryConfig",
    "SyncMetric",
    "SyncSource",
    "TimedOperation",
    "TimedRecord",
    "TracingConfig",
    "WebSocketMetric",
    "capture_error",
    "flush_metrics",
    "log_metric",
    "timed_operation",
]
