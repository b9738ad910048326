"""The dividends cache: what this process holds, read-through loads, bodies built once."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from gateway.dividends.cache import DividendsCache
from shared.cache import TwoLevelCache
from shared.trades import TriggerResult
from tests.fakes.chain import ALICE, BOB, DEFAULT_HOTKEY

PAIR = (3, DEFAULT_HOTKEY)
VALUE = {
    "entries": [[0, ALICE, 11], [3, ALICE, 5], [3, BOB, 7]],
    "storage": "TaoDividendsPerSubnet",
    "unit": "tao_rao",
    "block": 1000,
}


def _cache(redis: Redis, ttl_s: int = 60) -> DividendsCache:
    return DividendsCache(TwoLevelCache(redis, prefix="test:div:", ttl_s=ttl_s, max_local=100))


async def test_holds_only_what_was_loaded_into_this_process(redis: Redis) -> None:
    cache = _cache(redis)
    loads = 0

    async def load() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        return VALUE

    assert not cache.holds(None, ALICE)
    miss = await cache.get_or_load(None, ALICE, load)
    hit = await cache.get_or_load(None, ALICE, load)
    assert loads == 1 and (miss.cached, hit.cached) == (False, True)
    assert miss.expires_at is not None and miss.expires_at == hit.expires_at
    assert cache.holds(None, ALICE) and cache.holds(None, None)  # one all-subnets entry
    assert not cache.holds(3, None)
    assert hit.view().entries == [(0, ALICE, 11), (3, ALICE, 5)]  # filtered to the hotkey
    other = _cache(redis)  # another process: Redis has it, this memory does not (yet)
    assert not other.holds(None, ALICE)
    assert (await other.get_or_load(None, ALICE, load)).cached and loads == 1


async def test_an_answer_is_not_held_past_its_expiry(redis: Redis) -> None:
    cache = _cache(redis, ttl_s=1)

    async def load() -> dict[str, Any]:
        return VALUE

    await cache.get_or_load(3, None, load)
    assert cache.holds(3, None)
    await asyncio.sleep(1.05)
    assert not cache.holds(3, None)


async def test_bodies_are_built_once_per_value_and_trade_outcome(redis: Redis) -> None:
    cache = _cache(redis)

    async def load() -> dict[str, Any]:
        return VALUE

    held = await cache.get_or_load(3, None, load)
    cooling = TriggerResult(False, "t1", cooldown_left_s=30.2)
    first = cache.body(held, None, PAIR)
    assert cache.body(held, None, PAIR) is first
    assert cache.body(held, TriggerResult(False, "t1", cooldown_left_s=29.9), PAIR) is (
        cache.body(held, cooling, PAIR)
    )  # both read "ends in 30s"
    later = orjson.loads(cache.body(held, TriggerResult(False, "t1", cooldown_left_s=28.6), PAIR))
    assert later["trade_detail"].endswith("ends in 29s")
    body = orjson.loads(first)
    assert body["count"] == 3 and body["cached"] is False  # the body of the load itself
    assert body["trade_status"] == "not_requested"
    assert orjson.loads(cache.body(held, cooling, (3, ALICE)))["trade_detail"].startswith(
        f"a trade for netuid 3 hotkey {ALICE}"
    )
