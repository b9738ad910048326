"""Tweet search results cached per netuid in Redis (and in-process), so a burst of
trades for one subnet costs one Datura search."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from pipeline.clients.datura import Loader, TweetSearch
from shared.cache import TwoLevelCache
from shared.constants import KEY_TWEETS_CACHE
from shared.tweets import Tweet


def _dump(batch: TweetSearch) -> dict[str, Any]:
    return {
        "netuid": batch.netuid,
        "query": batch.query,
        "tweets": [tweet.to_dict() for tweet in batch.tweets],
        "fetched_at": batch.fetched_at.isoformat(),
        "skipped": batch.skipped,
        "cost_usd": batch.cost_usd,
    }


def _load(data: dict[str, Any], cached: bool) -> TweetSearch:
    return TweetSearch(
        netuid=int(data["netuid"]),
        query=str(data["query"]),
        tweets=tuple(Tweet.from_dict(t) for t in data["tweets"]),
        fetched_at=datetime.fromisoformat(data["fetched_at"]),
        skipped=int(data.get("skipped", 0)),
        cost_usd=data.get("cost_usd"),
        cached=cached,
    )


class RedisTweetCache:
    """`TweetCache` over the shared two-level cache (process LRU + Redis, single-flight).

    A hit in the process layer hands back the very value it holds: the search decoded from it
    is kept beside it (as many as the process layer holds), so a burst of trades for one
    subnet decodes its tweets once, not once per trade. One search is `cached=False` for
    one caller only: trades waiting on the same search (single-flight) get it as cached, so
    one trade's record says `datura` and the others' `cache`."""

    def __init__(self, redis: Redis, *, ttl_s: int, max_local: int = 1024) -> None:
        self._cache = TwoLevelCache(
            redis, prefix=KEY_TWEETS_CACHE, ttl_s=max(ttl_s, 1), max_local=max_local
        )
        self._decoded: OrderedDict[int, tuple[object, TweetSearch]] = OrderedDict()
        self._max_decoded = max_local

    async def get_or_load(self, netuid: int, loader: Loader) -> TweetSearch:
        async def load() -> dict[str, Any]:
            return _dump(await loader())

        result = await self._cache.get_or_load(str(netuid), load)
        kept = self._decoded.get(netuid)
        if kept is not None and kept[0] is result.value:  # the same value: already decoded
            self._decoded.move_to_end(netuid)
            return kept[1]
        search = _load(result.value, result.cached)
        # Whoever gets this value again gets it from the cache.
        self._decoded[netuid] = (result.value, replace(search, cached=True))
        self._decoded.move_to_end(netuid)
        while len(self._decoded) > self._max_decoded:
            self._decoded.popitem(last=False)
        return search
