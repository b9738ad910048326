"""The two-level cache: process layer, Redis layer, expiry and single-flight."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis

from shared.cache import LocalTTL, TwoLevelCache


async def test_levels_and_single_flight(redis: Redis) -> None:
    calls = 0

    async def load() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return {"v": calls}

    cache = TwoLevelCache(redis, prefix="t:", ttl_s=60, max_local=10)
    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(200)))
    assert calls == 1
    assert {r.level for r in results} == {"source"} and not results[0].cached
    assert (await cache.get_or_load("k", load)).level == "memory"
    other = TwoLevelCache(redis, prefix="t:", ttl_s=60, max_local=10)
    from_redis = await other.get_or_load("k", load)
    assert from_redis.level == "redis" and from_redis.value == {"v": 1} and calls == 1
    assert 0 < await redis.ttl("t:k") <= 60


async def test_failed_load_is_not_cached(redis: Redis) -> None:
    cache = TwoLevelCache(redis, prefix="t:", ttl_s=60, max_local=10)

    async def boom() -> int:
        raise ValueError("no")

    for _ in range(2):
        with contextlib.suppress(ValueError):
            await cache.get_or_load("bad", boom)
    assert await redis.exists("t:bad") == 0


def test_local_layer_expires_and_evicts() -> None:
    local = LocalTTL(max_entries=2)
    now = time.time()
    local.set("a", 1, now + 10)
    local.set("b", 2, now - 1)
    assert local.get("a", now) == 1 and local.get("b", now) is None
    local.set("c", 3, now + 10)
    local.set("d", 4, now + 10)
    assert local.get("a", now) is None and local.get("d", now) == 4
