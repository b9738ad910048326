"""Per-process series of the consumer loop and the worker's jobs: what *this* process did.

With several pipeline processes, `sum()` them across instances. Each stage and job binds its
series to their labels once (`StageMetrics`, `JobMetrics`), so the loop pays no label lookup.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info

from pipeline.metrics.constants import (
    DEAD_LETTER_REASONS,
    DELIVERY_VIA,
    JOB_OUTCOMES,
    STAGE_BUCKETS,
    STAGE_OUTCOMES,
    WORKER_REDIS_OPS,
)

STAGE_DELIVERIES = Counter(
    "taostake_stage_deliveries_total",
    "Stream entries this process handed to a stage handler (via=read: new entry, "
    "via=reclaim: taken over from a consumer that went quiet)",
    ["stage", "via"],
)
STAGE_ENTRIES = Counter(
    "taostake_stage_entries_total",
    "Entries this process finished, by outcome (done=acked, retry=left pending on request, "
    "failed=handler error, timeout=handler ran past WORKER_HANDLER_TIMEOUT_S, dead_lettered)",
    ["stage", "outcome"],
)
STAGE_DEAD_LETTERS = Counter(
    "taostake_stage_dead_letters_total",
    "Entries this process moved to stream:dead_letter, by reason",
    ["stage", "reason"],
)
STAGE_SECONDS = Histogram(
    "taostake_stage_handler_duration_seconds",
    "Time from a handler's start to its outcome (ack included; in-place retries during a "
    "dependency outage included)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
STAGE_OUTAGE_WAITS = Counter(
    "taostake_stage_outage_waits_total",
    "In-place retries of a handler while a dependency was unavailable (no delivery spent)",
    ["stage"],
)
STAGE_IN_FLIGHT = Gauge(
    "taostake_stage_in_flight", "Handlers running in this process right now", ["stage"]
)
WORKER_REDIS_ERRORS = Counter(
    "taostake_worker_redis_errors_total",
    "Redis errors of this process's consumer loop, by operation",
    ["op"],
)
JOB_RUNS = Counter(
    "taostake_job_runs_total",
    "Runs of the worker's periodic jobs in this process, by outcome (ok, failed=raised, "
    "timeout=cut at the job's timeout, cancelled=cut at shutdown)",
    ["job", "outcome"],
)
JOB_SECONDS = Histogram(
    "taostake_job_duration_seconds",
    "Time one run of a periodic job took, whatever its outcome",
    ["job"],
    buckets=STAGE_BUCKETS,
)
JOB_LAST_SUCCESS = Gauge(
    "taostake_job_last_success_timestamp_seconds",
    "Unix time the last successful run of a periodic job ended in this process",
    ["job"],
)
PIPELINE_INFO = Info(
    "taostake_pipeline", "This pipeline process: its consumer name and the stages it runs"
)

for _op in WORKER_REDIS_OPS:
    WORKER_REDIS_ERRORS.labels(_op)


class StageMetrics:
    """One stage's series, bound to their labels once: the consumer loop pays no label lookup."""

    __slots__ = ("dead_letters", "deliveries", "in_flight", "latency", "outage_waits", "outcomes")

    def __init__(self, stage: str) -> None:
        self.deliveries = {via: STAGE_DELIVERIES.labels(stage, via) for via in DELIVERY_VIA}
        self.outcomes = {name: STAGE_ENTRIES.labels(stage, name) for name in STAGE_OUTCOMES}
        self.dead_letters = {r: STAGE_DEAD_LETTERS.labels(stage, r) for r in DEAD_LETTER_REASONS}
        self.latency = STAGE_SECONDS.labels(stage)
        self.outage_waits = STAGE_OUTAGE_WAITS.labels(stage)
        self.in_flight = STAGE_IN_FLIGHT.labels(stage)

    def finished(self, outcome: str, began: float) -> None:
        """Count an outcome and observe the handler's time since `began` (monotonic)."""
        self.outcomes[outcome].inc()
        self.latency.observe(time.monotonic() - began)


class JobMetrics:
    """One periodic job's series (pipeline/jobs.py), bound to their labels once."""

    __slots__ = ("last_success", "latency", "outcomes")

    def __init__(self, job: str) -> None:
        self.outcomes = {name: JOB_RUNS.labels(job, name) for name in JOB_OUTCOMES}
        self.latency = JOB_SECONDS.labels(job)
        self.last_success = JOB_LAST_SUCCESS.labels(job)

    def finished(self, outcome: str, seconds: float) -> None:
        self.outcomes[outcome].inc()
        self.latency.observe(seconds)
        if outcome == "ok":
            self.last_success.set(time.time())


def set_pipeline_info(consumer: str, stages: Iterable[str]) -> None:
    PIPELINE_INFO.info({"consumer": consumer, "stages": ",".join(stages)})
