"""One try of the stake handler fits WORKER_HANDLER_TIMEOUT_S: its wait for the coldkey's
lane leaves room for an account read and a signature (each up to CHAIN_TIMEOUT_S), the
submit (STAKE_SUBMIT_TIMEOUT_S) and the database round trips, so a trade that gets the lane
at the end of its wait is never cut off mid-submit (a spent delivery, a cancelled submit,
a row left `submitting`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from shared.bus import publish
from shared.chain.staking_types import AccountState, SignedStake, StakeOrder
from shared.constants import KEY_COLDKEY_LOCK
from shared.db.models import StakeAction
from shared.ids import new_id
from shared.settings import STAKE_HANDLER_MARGIN_S, Settings
from tests.fakes.staker import COLDKEY, FakeStaker
from tests.pipeline.conftest import eventually, running_worker
from tests.pipeline.stored import stored_scored


def test_settings_refuse_a_handler_timeout_a_submit_cannot_fit_in() -> None:
    budget: dict[str, Any] = {"stake_submit_timeout_s": 120.0, "chain_timeout_s": 10.0}
    needed = 120 + 2 * 10 + STAKE_HANDLER_MARGIN_S
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, worker_handler_timeout_s=130.0, **budget)  # type: ignore[call-arg]
    message = str(refused.value)
    assert "WORKER_HANDLER_TIMEOUT_S=130 is too short for the stake stage" in message
    assert "STAKE_SUBMIT_TIMEOUT_S=120 + 2 × CHAIN_TIMEOUT_S=10" in message
    assert f"= {needed:g} s" in message
    with pytest.raises(ValidationError):
        Settings(_env_file=None, worker_handler_timeout_s=needed, **budget)  # type: ignore[call-arg]
    fits = Settings(_env_file=None, worker_handler_timeout_s=needed + 1, **budget)  # type: ignore[call-arg]
    assert fits.stake_lane_wait_s == 1.0
    assert Settings(_env_file=None).stake_lane_wait_s == 240 - 120 - 20 - STAKE_HANDLER_MARGIN_S  # type: ignore[call-arg]


class SlowStaker(FakeStaker):
    """Account read and signing each take almost CHAIN_TIMEOUT_S."""

    def __init__(self, chain_s: float) -> None:
        super().__init__()
        self.chain_s = chain_s

    async def account(self, netuid: int, hotkey: str) -> AccountState:
        await asyncio.sleep(self.chain_s)
        return await super().account(netuid, hotkey)

    async def sign(self, order: StakeOrder) -> SignedStake:
        await asyncio.sleep(self.chain_s)
        return await super().sign(order)


async def test_a_trade_that_gets_the_lane_late_still_submits_within_the_handler_timeout(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """Another process holds the coldkey's lane for most of a handler timeout (5 s here).
    Waiting for it as long as "handler timeout − submit timeout − 10 s" (floored at 5 s)
    took the lane with no time left for account + sign + submit: the try timed out."""
    settings = pipeline_settings
    assert settings.chain_timeout_s == 1.0 and settings.worker_handler_timeout_s == 5.0
    staker = SlowStaker(chain_s=0.9 * settings.chain_timeout_s)
    staker.delay_s = 0.8 * settings.stake_submit_timeout_s
    rival = redis.lock(f"{KEY_COLDKEY_LOCK}{COLDKEY}", timeout=30)
    assert await rival.acquire(blocking=False)
    trade_id = new_id()
    async with running_worker(settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(trade_id), maxlen=1000)
        held_from = time.monotonic()
        await asyncio.sleep(4.0)  # the lane frees late in the first try's handler timeout
        await rival.release()

        async def settled() -> StakeAction | None:
            row = await StakeAction.get_or_none(trade_id=trade_id)
            return row if row is not None and row.status == "succeeded" else None

        action = await eventually(settled, timeout=20)
    assert time.monotonic() - held_from >= 4.0
    assert action.status == "succeeded" and len(staker.extrinsics) == 1
    assert worker.stats["failed"] == 0  # no try ran out of time: no delivery spent
    assert worker.stats["outage_waits"] >= 1  # the waits gave up in time, spending nothing
