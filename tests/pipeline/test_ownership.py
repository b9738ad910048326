"""Keepalive and defer on a real stream and group: only entries this consumer holds or owns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.ownership import Ownership
from shared.tasks import cancel_and_wait

STREAM = "stream:test_ownership"
GROUP = "testers"
ME = "me"
OTHER = "other"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def deliver(redis: Redis, consumer: str, count: int) -> list[str]:
    """Add `count` entries and read them as `consumer`: pending there, delivered once."""
    for n in range(count):
        await redis.xadd(STREAM, {"n": str(n)})
    reply: Any = await redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    return [text(row[0]) for row in reply[0][1]]


async def pending(redis: Redis) -> dict[str, dict[str, Any]]:
    """entry id -> consumer, idle ms and times delivered."""
    rows = await redis.xpending_range(STREAM, GROUP, min="-", max="+", count=100)
    return {
        text(row["message_id"]): {
            "consumer": text(row["consumer"]),
            "idle_ms": int(row["time_since_delivered"]),
            "deliveries": int(row["times_delivered"]),
        }
        for row in rows
    }


@pytest.fixture
async def group(redis: Redis) -> Redis:
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    return redis


@contextlib.asynccontextmanager
async def keeping_alive(owned: Ownership) -> AsyncIterator[None]:
    task = asyncio.create_task(owned.keepalive_loop())
    try:
        yield
    finally:
        # A cancel can be lost inside redis-py's reads: cancelled again until it lands, as
        # the worker does.
        assert not await cancel_and_wait([task], timeout_s=5)


class TestKeepalive:
    async def test_resets_the_idle_time_of_held_entries_only(self, group: Redis) -> None:
        held, loose = await deliver(group, ME, 2)
        owned = Ownership(group, ME, claim_idle_ms=60)  # touches every 20 ms
        owned.hold([(STREAM, GROUP, held)])
        async with keeping_alive(owned):
            await asyncio.sleep(0.3)
            rows = await pending(group)
        assert rows[held]["idle_ms"] < 150
        assert rows[loose]["idle_ms"] >= 280
        assert rows[held]["deliveries"] == 1  # JUSTID: no delivery spent
        assert rows[held]["consumer"] == ME

    async def test_let_go_stops_the_touches(self, group: Redis) -> None:
        (entry_id,) = await deliver(group, ME, 1)
        owned = Ownership(group, ME, claim_idle_ms=60)
        key = (STREAM, GROUP, entry_id)
        owned.hold([key])
        async with keeping_alive(owned):
            await asyncio.sleep(0.1)
            assert (await pending(group))[entry_id]["idle_ms"] < 80
            owned.let_go([key])
            await asyncio.sleep(0.3)
            assert (await pending(group))[entry_id]["idle_ms"] >= 280

    async def test_never_takes_back_an_entry_another_consumer_reclaimed(self, group: Redis) -> None:
        (entry_id,) = await deliver(group, ME, 1)
        owned = Ownership(group, ME, claim_idle_ms=60)
        owned.hold([(STREAM, GROUP, entry_id)])
        await group.xclaim(STREAM, GROUP, OTHER, 0, [entry_id])
        async with keeping_alive(owned):
            await asyncio.sleep(0.3)
        row = (await pending(group))[entry_id]
        assert row["consumer"] == OTHER
        assert row["idle_ms"] >= 280


class TestDefer:
    async def test_back_dates_only_entries_this_consumer_owns(self, group: Redis) -> None:
        mine = await deliver(group, ME, 2)
        (theirs,) = await deliver(group, OTHER, 1)
        owned = Ownership(group, ME, claim_idle_ms=10_000)
        await owned.defer(STREAM, GROUP, [*mine, theirs], defer_s=2.0)
        rows = await pending(group)
        for entry_id in mine:
            # claimable in ~2 s: idle set to claim_idle_ms - 2 s
            assert 8_000 <= rows[entry_id]["idle_ms"] < 8_500
            assert (rows[entry_id]["consumer"], rows[entry_id]["deliveries"]) == (ME, 1)
        assert rows[theirs]["idle_ms"] < 500
        assert (rows[theirs]["consumer"], rows[theirs]["deliveries"]) == (OTHER, 1)

    async def test_a_deferred_entry_is_claimable_once_the_defer_has_passed(
        self, group: Redis
    ) -> None:
        (entry_id,) = await deliver(group, ME, 1)
        owned = Ownership(group, ME, claim_idle_ms=1_000)
        await owned.defer(STREAM, GROUP, [entry_id], defer_s=0.25)
        early = await group.xautoclaim(STREAM, GROUP, OTHER, 1_000, count=10)
        assert early[1] == []
        await asyncio.sleep(0.3)
        late = await group.xautoclaim(STREAM, GROUP, OTHER, 1_000, count=10)
        assert [text(row[0]) for row in late[1]] == [entry_id]

    async def test_a_defer_cannot_exceed_the_claim_delay(self, group: Redis) -> None:
        (entry_id,) = await deliver(group, ME, 1)
        await asyncio.sleep(0.2)
        owned = Ownership(group, ME, claim_idle_ms=1_000)
        await owned.defer(STREAM, GROUP, [entry_id], defer_s=5.0)
        assert (await pending(group))[entry_id]["idle_ms"] < 150  # reset to 0, not negative
