"""Prometheus metrics of the pipeline process, and of beat through Redis.

Two kinds, and docs/metrics.md says which is which:

* **Per process** (counters, histograms, in-flight gauges): what *this* pipeline process
  did. With several processes, `sum()` them across instances.
* **Global** (the `Sampler`'s gauges): read every METRICS_SAMPLE_EVERY_S from Redis (stream
  length, group lag and pending), from the `stake_actions` table (decisions by status,
  extrinsics by outcome, skips by reason, oldest unsettled extrinsic) and from the keys beat
  writes after each run. Every process reports the same values: take `max()`, never sum.

Beat (Celery, a forking worker) serves no endpoint of its own: each run leaves its counts in
Redis, which the pipeline exposes.

One module per concern: `constants` (label values, buckets, the port), `process` (the
consumer loop's and jobs' series), `api` (outside-API traffic), `snapshot` (the global
gauges' families), `sampler` (reads them from Redis and the database), `server` (GET /metrics).
"""

from pipeline.metrics.api import install_http_metrics
from pipeline.metrics.constants import DEFAULT_PORT, SKIP_REASON_LABELS, SKIP_REASONS
from pipeline.metrics.process import (
    WORKER_REDIS_ERRORS,
    JobMetrics,
    StageMetrics,
    set_pipeline_info,
)
from pipeline.metrics.sampler import Sampler
from pipeline.metrics.server import MetricsServer
from pipeline.metrics.snapshot import SNAPSHOT
from shared.constants import KEY_SCHEDULE_ERRORS

__all__ = [
    "DEFAULT_PORT",
    "KEY_SCHEDULE_ERRORS",
    "SKIP_REASONS",
    "SKIP_REASON_LABELS",
    "SNAPSHOT",
    "WORKER_REDIS_ERRORS",
    "JobMetrics",
    "MetricsServer",
    "Sampler",
    "StageMetrics",
    "install_http_metrics",
    "set_pipeline_info",
]
