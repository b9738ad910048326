"""The local-first rate limiter: exact per process, settled across processes via Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.ratelimit import RateLimiter
from shared.errors import RateLimited


async def test_exact_within_a_process(redis: Redis) -> None:
    limiter = RateLimiter(redis, sync_s=10)
    for _ in range(5):
        limiter.hit("tok", "read", 5)
    with pytest.raises(RateLimited) as info:
        limiter.hit("tok", "read", 5)
    assert 1 <= info.value.retry_after_s <= 60
    limiter.hit("tok", "trade", 5)  # a separate budget per kind
    limiter.hit("other", "read", 5)  # and per token


async def test_processes_share_the_budget_after_sync(redis: Redis) -> None:
    one, two = RateLimiter(redis, sync_s=10), RateLimiter(redis, sync_s=10)
    for _ in range(6):
        one.hit("tok", "read", 10)
    await one.sync()
    two.hit("tok", "read", 10)
    await two.sync()  # learns the global count: 7
    for _ in range(3):
        two.hit("tok", "read", 10)
    with pytest.raises(RateLimited):
        two.hit("tok", "read", 10)
    keys = [k async for k in redis.scan_iter("ratelimit:read:tok:*")]
    assert len(keys) == 1 and int(await redis.get(keys[0])) == 7
