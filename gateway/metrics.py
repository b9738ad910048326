"""Prometheus metrics of the gateway process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "taostake_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "taostake_http_request_duration_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_LOOKUPS = Counter(
    "taostake_cache_lookups_total", "Dividend cache lookups by outcome", ["result"]
)
CHAIN_READS = Counter(
    "taostake_chain_reads_total", "Chain reads by kind and outcome", ["kind", "outcome"]
)
TRADES = Counter("taostake_trades_total", "Trade trigger outcomes", ["result"])
AUTH_FAILURES = Counter("taostake_auth_failures_total", "Rejected credentials", ["reason"])
RATE_LIMITED = Counter("taostake_rate_limited_total", "Requests refused by rate limits", ["kind"])
FASTPATH_HITS = Counter(
    "taostake_fastpath_hits_total", "Cache hits answered before FastAPI routing"
)
OVERSIZED_REQUESTS = Counter(
    "taostake_oversized_requests_total",
    "Requests refused on their size before any other work",
    ["reason"],
)
