"""The runner's shutdown is bounded: its background jobs stop even when a cancel is lost."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from pipeline.stages.stake import StakeStage
from shared.settings import Settings
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import running_worker


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

    async def stubborn_sweep(self: StakeStage) -> int:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed.append(1)
                if len(swallowed) >= 3:
                    raise

    monkeypatch.setattr(StakeStage, "reconcile_unsettled", stubborn_sweep)
    started = time.monotonic()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    assert len(swallowed) >= 3  # it was cancelled again after losing the first cancels
    assert elapsed < 12.0
