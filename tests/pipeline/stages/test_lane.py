"""The coldkey lane (pipeline/stages/lane.py): a renewed lease on real Redis, and the
persisted unsettled rows that keep the lane closed whatever happens to the lease."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from pipeline.stages.lane import ColdkeyLane
from pipeline.worker import Unavailable
from shared.constants import KEY_COLDKEY_LOCK
from shared.db.models import StakeAction, Trade
from shared.ids import new_id
from tests.fakes.chain import ALICE
from tests.fakes.staker import COLDKEY

KEY = f"{KEY_COLDKEY_LOCK}{COLDKEY}"


async def test_the_lease_is_renewed_while_a_slow_holder_runs_past_its_ttl(redis: Redis) -> None:
    lane = ColdkeyLane(redis, ttl_s=0.6, wait_s=0.1)
    rival = ColdkeyLane(redis, ttl_s=0.6, wait_s=0.1)
    ttls: list[int] = []
    async with lane.hold(COLDKEY) as lease:
        began = time.monotonic()
        while time.monotonic() - began < 2.0:  # over three TTLs
            ttls.append(await redis.pttl(KEY))
            await asyncio.sleep(0.1)
        with pytest.raises(Unavailable, match="another process holds"):
            async with rival.hold(COLDKEY):
                pass
        assert not lease.lost.is_set()
    assert min(ttls) > 0 and lease.renewals >= 4
    assert await redis.exists(KEY) == 0  # released on exit
    # The renewal task ended with the block: nothing extends a key we no longer hold.
    await redis.set(KEY, "someone-else", px=600)
    await asyncio.sleep(0.5)
    assert 0 < await redis.pttl(KEY) <= 200


async def test_a_lease_taken_away_is_known_before_signing(redis: Redis) -> None:
    lane = ColdkeyLane(redis, ttl_s=0.3, wait_s=0.1)
    async with lane.hold(COLDKEY) as lease:
        await redis.set(KEY, "another-token", px=5000)  # lapsed and taken by someone else
        await asyncio.sleep(0.25)
        assert lease.lost.is_set()
        with pytest.raises(Unavailable, match="lease lost before signing"):
            lease.ensure_held()
    assert await redis.get(KEY) == b"another-token"  # ours to release no more


async def test_an_unsettled_extrinsic_keeps_the_lane_closed(orm: str, redis: Redis) -> None:
    lane = ColdkeyLane(redis, ttl_s=5, wait_s=0.1)
    trade = await Trade.create(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    action = await StakeAction.create(
        trade=trade, netuid=3, hotkey=ALICE, direction="add", status="unknown", coldkey=COLDKEY
    )
    async with lane.hold(COLDKEY) as lease:
        with pytest.raises(Unavailable, match=f"trade {trade.trade_id} has an unsettled"):
            await lane.ensure_open(lease)
    async with lane.hold("5SomeOtherColdkey") as other:
        await lane.ensure_open(other)  # another coldkey's lane is open
    await StakeAction.filter(id=action.id).update(status="failed")
    async with lane.hold(COLDKEY) as lease:
        await lane.ensure_open(lease)
