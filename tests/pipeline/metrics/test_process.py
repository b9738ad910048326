"""Per-process series of the consumer loop (deliveries, outcomes, outage waits, dead letters)
and of the worker's periodic jobs."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from shared.constants import (
    STREAM_DEAD_LETTER,
)
from tests.pipeline.conftest import eventually


async def test_worker_counts_failures_reclaims_outage_waits_and_dead_letters(
    redis: Redis,
) -> None:
    from prometheus_client import REGISTRY

    from pipeline.worker import Retry, Stage, StreamEntry, Unavailable, Worker

    stream, stage = "stream:test_metrics", "metrics_probe"
    tries: dict[str, int] = {}

    async def handler(entry: StreamEntry) -> None:
        kind = entry.fields["kind"]
        tries[kind] = tries.get(kind, 0) + 1
        if kind == "broken":
            raise ValueError("always fails")
        if kind == "flaky" and tries[kind] == 1:
            raise Unavailable("database down")  # retried in place, no delivery spent
        if kind == "later" and tries[kind] == 1:
            raise Retry("not yet", defer_s=0.05)

    def counts() -> dict[str, float]:
        names = {
            "read": ("taostake_stage_deliveries_total", {"via": "read"}),
            "reclaim": ("taostake_stage_deliveries_total", {"via": "reclaim"}),
            "done": ("taostake_stage_entries_total", {"outcome": "done"}),
            "failed": ("taostake_stage_entries_total", {"outcome": "failed"}),
            "retry": ("taostake_stage_entries_total", {"outcome": "retry"}),
            "dead": ("taostake_stage_dead_letters_total", {"reason": "max_deliveries"}),
            "outage": ("taostake_stage_outage_waits_total", {}),
            "timed": ("taostake_stage_handler_duration_seconds_count", {}),
        }
        return {
            key: REGISTRY.get_sample_value(name, {"stage": stage, **labels}) or 0.0
            for key, (name, labels) in names.items()
        }

    before = counts()
    worker = Worker(
        redis,
        [Stage(stage, stream, "probe", handler)],
        block_ms=100,
        claim_idle_ms=60,
        claim_every_s=0.05,
        max_deliveries=2,
        outage_backoff_s=(0.01, 0.01),
    )
    for kind in ("broken", "flaky", "later"):
        await redis.xadd(stream, {"kind": kind})
    task = asyncio.create_task(worker.run())
    try:

        async def finished() -> bool:
            return await redis.xlen(STREAM_DEAD_LETTER) == 1 and tries.get("later") == 2

        await eventually(finished, timeout=10)
        await eventually(lambda: _true(counts()["done"] - before["done"] == 2), timeout=5)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    grew = {key: counts()[key] - before[key] for key in before}
    # broken: read, reclaimed once, dead-lettered at its third delivery without running.
    # later: read, retried, reclaimed once, done. flaky: read, one outage wait, done.
    assert grew == {
        "read": 3,
        "reclaim": 3,
        "done": 2,
        "failed": 2,
        "retry": 1,
        "dead": 1,
        "outage": 1,
        "timed": 5,
    }


async def _true(flag: bool) -> bool:
    return flag


async def test_job_runs_are_counted_by_outcome_with_duration_and_last_success(
    redis: Redis,
) -> None:
    from prometheus_client import REGISTRY

    from pipeline.worker import Job, Stage, StreamEntry, Worker

    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("chain down")
        if calls == 3:
            await asyncio.sleep(3600)  # cut at its timeout

    async def handler(entry: StreamEntry) -> None:
        return None

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"job": "metrics_probe_job", **labels}) or 0.0

    before = {
        outcome: sample("taostake_job_runs_total", outcome=outcome)
        for outcome in ("ok", "failed", "timeout")
    }
    durations = sample("taostake_job_duration_seconds_count")
    began = time.time()
    worker = Worker(
        redis,
        [Stage("job_probe", "stream:test_job_metrics", "probe", handler)],
        block_ms=50,
        jobs=[Job("metrics_probe_job", flaky, every_s=0.02, timeout_s=0.2)],
    )

    async def enough() -> bool:
        return calls >= 5

    task = asyncio.create_task(worker.run())
    try:
        await eventually(enough, timeout=5)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    runs = worker.jobs["metrics_probe_job"]["runs"]
    deltas = {
        outcome: sample("taostake_job_runs_total", outcome=outcome) - before[outcome]
        for outcome in ("ok", "failed", "timeout")
    }
    assert deltas["failed"] == 1
    assert deltas["timeout"] == 1
    assert deltas["ok"] == runs - 2
    assert sample("taostake_job_duration_seconds_count") - durations == runs
    assert sample("taostake_job_last_success_timestamp_seconds") >= began
