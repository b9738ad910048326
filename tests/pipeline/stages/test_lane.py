"""The coldkey lane (pipeline/stages/lane.py): a renewed lease on real Redis with its own
deadline, a bounded wait, the persisted unsettled rows that keep the lane closed whatever
happens to the lease, and the database index that refuses a second one."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from tortoise.exceptions import IntegrityError

from pipeline.stages.lane import ColdkeyLane
from pipeline.worker import Unavailable
from shared.constants import KEY_COLDKEY_LOCK
from shared.db.models import StakeAction, Trade
from shared.ids import new_id
from shared.settings import Settings
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


async def test_a_lease_whose_renewals_keep_failing_is_not_trusted_past_its_deadline(
    orm: str, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis unreachable for the renewals: the key may lapse (and be taken) without any
    LockError telling us, so `lost` is never set; the lease's own deadline refuses."""
    lane = ColdkeyLane(redis, ttl_s=0.6, wait_s=0.1)
    async with lane.hold(COLDKEY) as lease:
        lease.ensure_held()

        async def unreachable(*args: object, **kwargs: object) -> bool:
            raise RedisConnectionError("Connection refused")

        monkeypatch.setattr(lease.lock, "reacquire", unreachable)
        await asyncio.sleep(0.75)  # past the TTL: two renewals failed
        assert not lease.lost.is_set()
        with pytest.raises(Unavailable, match="lease may have lapsed"):
            lease.ensure_held()
        with pytest.raises(Unavailable, match="lease may have lapsed"):
            await lane.ensure_open(lease)


async def test_waiting_in_the_process_queue_is_bounded(redis: Redis) -> None:
    """A trade queued behind a long holder of the same coldkey gives up after `wait_s`
    (Unavailable: waited out in place) instead of running into the handler timeout."""
    lane = ColdkeyLane(redis, ttl_s=5, wait_s=0.3)
    held = asyncio.Event()
    release = asyncio.Event()

    async def long_holder() -> None:
        async with lane.hold(COLDKEY):
            held.set()
            await release.wait()

    holder = asyncio.create_task(long_holder())
    await held.wait()
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="another trade of this coldkey holds the lane"):
            async with asyncio.timeout(3):
                async with lane.hold(COLDKEY):
                    pass
        waited = time.monotonic() - started
    finally:
        release.set()
        await holder
    assert 0.25 <= waited < 1.0
    async with lane.hold(COLDKEY) as lease:  # released properly: free again
        lease.ensure_held()


async def test_the_database_refuses_a_second_unsettled_row_per_coldkey(orm: str) -> None:
    """The fence that does not depend on the lease (migration 0004)."""

    async def row(status: str, coldkey: str = COLDKEY) -> StakeAction:
        trade = await Trade.create(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
        return await StakeAction.create(
            trade=trade, netuid=3, hotkey=ALICE, direction="add", status=status, coldkey=coldkey
        )

    first = await row("unknown")
    for status in ("submitting", "unknown"):
        with pytest.raises(IntegrityError):
            await row(status)
    for status in ("succeeded", "failed", "included", "skipped"):
        await row(status)  # settled rows never conflict
    await row("submitting", "5SomeOtherColdkey")  # nor another coldkey's
    await StakeAction.filter(id=first.id).update(status="failed")
    await row("submitting")  # the lane's one slot is free again


async def test_a_lease_taken_after_a_long_wait_counts_its_ttl_from_when_it_was_taken(
    redis: Redis,
) -> None:
    """The deadline runs from the request that took the lease, not from when the wait
    began: a wait longer than the TTL must not hand out a lease that is already stale."""
    lane = ColdkeyLane(redis, ttl_s=0.6, wait_s=3.0)
    await redis.set(KEY, "another-process", px=1000)
    started = time.monotonic()
    async with lane.hold(COLDKEY) as lease:
        waited = time.monotonic() - started
        lease.ensure_held()
    assert 0.9 <= waited < 1.5


async def test_the_stage_lane_is_timed_by_its_settings(
    redis: Redis, pipeline_settings: Settings
) -> None:
    """A crashed holder's lease lapses once its row is due for the sweep (an account read, a
    submit and the settle margin); a rival waits the lane budget
    (Settings.stake_lane_wait_s), no longer."""
    settings = pipeline_settings
    lane = ColdkeyLane.from_settings(redis, settings)
    ttl_s = settings.chain_timeout_s + settings.stake_submit_timeout_s
    ttl_s += settings.stake_settle_margin_s
    async with lane.hold(COLDKEY):
        left_ms = await redis.pttl(KEY)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            async with ColdkeyLane.from_settings(redis, settings).hold(COLDKEY):
                pass
        waited = time.monotonic() - started
    assert ttl_s * 1000 - 500 < left_ms <= ttl_s * 1000
    assert settings.stake_lane_wait_s - 0.2 <= waited < settings.stake_lane_wait_s + 1.0
