"""pipeline/tweet_cache.py over real Redis: one search per subnet, its tweets decoded once per
value the process holds, never a stale decoding."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from pipeline.clients.datura import Loader, TweetSearch
from pipeline.tweet_cache import RedisTweetCache
from shared.tweets import Tweet


def _searcher(calls: list[int]) -> Callable[[int], Loader]:
    """A search per netuid that counts its calls; each call finds a tweet of its own."""

    def for_netuid(netuid: int) -> Loader:
        async def search() -> TweetSearch:
            calls.append(netuid)
            tweets = (
                Tweet(id=f"{netuid}-{len(calls)}", text=f"subnet {netuid} news", like_count=3),
            )
            return TweetSearch(netuid, f"q{netuid}", tweets, datetime.now(UTC))

        return search

    return for_netuid


async def test_a_subnets_tweets_are_searched_and_decoded_once(redis: Redis) -> None:
    cache = RedisTweetCache(redis, ttl_s=60)
    calls: list[int] = []
    search = _searcher(calls)
    first = await cache.get_or_load(7, search(7))
    second = await cache.get_or_load(7, search(7))
    third = await cache.get_or_load(7, search(7))
    assert calls == [7]
    assert (first.cached, second.cached) == (False, True)
    assert second is third  # the process layer's value, decoded once
    assert second.tweets == first.tweets and second.query == first.query == "q7"
    assert second.tweets[0].like_count == 3


async def test_a_new_value_is_decoded_again(redis: Redis) -> None:
    cache = RedisTweetCache(redis, ttl_s=1)
    calls: list[int] = []
    search = _searcher(calls)
    old = await cache.get_or_load(7, search(7))
    await cache.get_or_load(7, search(7))
    await asyncio.sleep(1.1)  # both levels expired: searched again
    new = await cache.get_or_load(7, search(7))
    assert calls == [7, 7]
    assert [t.id for t in old.tweets] == ["7-1"] and [t.id for t in new.tweets] == ["7-2"]
    again = await cache.get_or_load(7, search(7))
    assert [t.id for t in again.tweets] == ["7-2"] and again.cached


async def test_a_value_read_from_redis_is_decoded_from_it(redis: Redis) -> None:
    """Another process searched: this one's first answer comes from Redis, decoded once."""
    other, this = RedisTweetCache(redis, ttl_s=60), RedisTweetCache(redis, ttl_s=60)
    calls: list[int] = []
    search = _searcher(calls)
    await other.get_or_load(7, search(7))
    first = await this.get_or_load(7, search(7))
    second = await this.get_or_load(7, search(7))
    assert calls == [7] and first.cached and second.cached
    assert [t.id for t in first.tweets] == [t.id for t in second.tweets] == ["7-1"]


async def test_no_more_decoded_searches_are_kept_than_values(redis: Redis) -> None:
    cache = RedisTweetCache(redis, ttl_s=60, max_local=2)
    calls: list[int] = []
    search = _searcher(calls)
    for netuid in (1, 2, 3, 1):
        await cache.get_or_load(netuid, search(netuid))
    assert len(cache._decoded) == 2
    assert list(cache._decoded) == [3, 1]


async def test_trades_waiting_on_one_search_get_it_as_cached_but_one(redis: Redis) -> None:
    cache = RedisTweetCache(redis, ttl_s=60)
    calls: list[int] = []
    release = asyncio.Event()

    async def slow_search() -> TweetSearch:
        calls.append(7)
        await release.wait()
        tweets = (Tweet(id="7-1", text="subnet 7 news"),)
        return TweetSearch(7, "q7", tweets, datetime.now(UTC))

    waiting = [asyncio.create_task(cache.get_or_load(7, slow_search)) for _ in range(3)]
    await asyncio.sleep(0.05)
    release.set()
    found = await asyncio.gather(*waiting)
    assert calls == [7]  # one search for the three (single-flight)
    assert sorted(s.cached for s in found) == [False, True, True]
    assert {tuple(t.id for t in s.tweets) for s in found} == {("7-1",)}
