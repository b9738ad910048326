"""The worker's health key: a JSON snapshot with a TTL, refreshed, deleted at stop."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.heartbeat import Heartbeat
from shared.constants import KEY_WORKER_HEALTH
from shared.tasks import cancel_and_wait

KEY = f"{KEY_WORKER_HEALTH}consumer-1"


async def stored(redis: Redis) -> Any:
    raw: Any = await redis.get(KEY)
    return orjson.loads(raw)


class Snapshots:
    """A snapshot that changes on every call, so a refresh shows."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"consumer": "consumer-1", "beat": self.calls, "stats": {"done": 3}}


async def test_beat_writes_the_json_snapshot_with_a_ttl(redis: Redis) -> None:
    heartbeat = Heartbeat(redis, "consumer-1", ttl_s=30, snapshot=Snapshots())
    await heartbeat.beat()
    assert await stored(redis) == {
        "consumer": "consumer-1",
        "beat": 1,
        "stats": {"done": 3},
    }
    assert 28 <= await redis.ttl(KEY) <= 30
    await heartbeat.beat()
    assert (await stored(redis))["beat"] == 2


async def test_delete_removes_the_key(redis: Redis) -> None:
    heartbeat = Heartbeat(redis, "consumer-1", ttl_s=30, snapshot=Snapshots())
    await heartbeat.beat()
    await heartbeat.delete()
    assert await redis.exists(KEY) == 0


async def test_the_loop_refreshes_every_third_of_the_ttl(redis: Redis) -> None:
    snapshots = Snapshots()
    heartbeat = Heartbeat(redis, "consumer-1", ttl_s=1, snapshot=snapshots)
    task = asyncio.create_task(heartbeat.loop())
    await asyncio.sleep(0.5)  # beats at 0 and ~0.33 s
    assert not await cancel_and_wait([task], timeout_s=5)  # as the worker stops it
    assert snapshots.calls == 2
    assert (await stored(redis))["beat"] == 2
    assert 0 < await redis.pttl(KEY) <= 1000


async def test_redis_down_is_logged_not_raised(redis: Redis) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        heartbeat = Heartbeat(unreachable, "consumer-1", ttl_s=30, snapshot=Snapshots())
        await heartbeat.beat()
        await heartbeat.delete()
    finally:
        await unreachable.aclose()
    assert await redis.exists(KEY) == 0
