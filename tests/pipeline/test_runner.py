"""The runner hands its periodic work to the worker as jobs; shutdown is bounded even when a
cancel is lost."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from pipeline.runner import StakeSetup, build_worker
from pipeline.stages.settlement import Settlement
from shared.settings import Settings
from tests.conftest import free_port
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import eventually, running_worker


async def test_shutdown_repeated_50_times_never_hangs(
    orm: str, pipeline_settings: Settings, staker: FakeStaker
) -> None:
    settings = pipeline_settings.model_copy(update={"stake_reconcile_every_s": 0.005})
    slowest = 0.0
    for _ in range(50):
        started = time.monotonic()
        async with running_worker(settings, staker) as worker:
            await asyncio.sleep(0.02)
            assert worker.in_flight >= 0
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 5.0


async def test_a_reconciler_that_swallows_its_cancel_still_lets_the_worker_stop(
    orm: str,
    pipeline_settings: Settings,
    staker: FakeStaker,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What Python 3.11 does to a cancel that lands inside redis-py's wait_for: lost."""
    swallowed: list[int] = []

    async def stubborn_sweep(self: Settlement) -> int:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed.append(1)
                if len(swallowed) >= 3:
                    raise

    monkeypatch.setattr(Settlement, "sweep", stubborn_sweep)
    started = time.monotonic()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    assert len(swallowed) >= 3  # it was cancelled again after losing the first cancels
    assert elapsed < 12.0


async def test_the_sweep_and_the_sampler_are_jobs_of_the_worker(
    orm: str, pipeline_settings: Settings, staker: FakeStaker
) -> None:
    """No bare background task: both run (and drain, and report) as the worker's jobs."""
    settings = pipeline_settings.model_copy(
        update={"stake_reconcile_every_s": 0.05, "metrics_sample_every_s": 1}
    )
    async with build_worker(
        settings,
        ("stake",),
        stake_setup=StakeSetup(staker, None),
        block_ms=50,
        init_orm=False,
        metrics_port=free_port(),
    ) as worker:
        assert sorted(worker.jobs) == ["metrics_sampler", "settlement"]
        before = set(asyncio.all_tasks())
        task = asyncio.create_task(worker.run())

        async def swept() -> bool:
            return bool(worker.jobs["settlement"]["runs"] >= 3)

        await eventually(swept, timeout=5)
        assert worker.jobs["metrics_sampler"]["runs"] >= 1
        assert worker.jobs["settlement"]["failures"] == 0
        worker.stop()
        await asyncio.wait_for(task, 10)
        assert not [t for t in asyncio.all_tasks() - before if not t.done()]


async def test_without_a_metrics_endpoint_there_is_no_sampler_job(
    orm: str, pipeline_settings: Settings, staker: FakeStaker
) -> None:
    async with build_worker(
        pipeline_settings,
        ("stake",),
        stake_setup=StakeSetup(staker, None),
        init_orm=False,
        metrics_port=0,
    ) as worker:
        assert list(worker.jobs) == ["settlement"]
