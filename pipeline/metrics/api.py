"""Per-process series of outside-API traffic (Datura, Chutes), fed by the HTTP client.

The HTTP client (`pipeline.clients.http`) knows nothing of Prometheus: it tells a registered
observer of every attempt and of every call that failed for good; this module is that observer.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from pipeline.metrics.constants import API_BUCKETS, API_SERVICES

API_SECONDS = Histogram(
    "taostake_external_request_duration_seconds",
    "Latency of one HTTP attempt to an outside API (failed attempts included)",
    ["service"],
    buckets=API_BUCKETS,
)
API_REQUESTS = Counter(
    "taostake_external_requests_total",
    "HTTP attempts to an outside API by outcome (retries are attempts of their own)",
    ["service", "outcome"],
)
API_FAILURES = Counter(
    "taostake_external_request_failures_total",
    "Outside-API calls that failed for good (retries spent or not retryable), by error code",
    ["service", "error"],
)

for _service in API_SERVICES:
    API_SECONDS.labels(_service)
    API_REQUESTS.labels(_service, "ok")


class _HTTPMetrics:
    """Receives pipeline/clients/http.py's per-attempt and per-failure notices."""

    def attempt(self, service: str, outcome: str, seconds: float) -> None:
        API_REQUESTS.labels(service, outcome).inc()
        API_SECONDS.labels(service).observe(seconds)

    def failed(self, service: str, error: str) -> None:
        API_FAILURES.labels(service, error).inc()


def install_http_metrics() -> None:
    """Count every outside-API call of this process (idempotent)."""
    from pipeline.clients.observer import set_request_observer

    set_request_observer(_HTTPMetrics())
