"""Two-level cache: a bounded in-process TTL layer in front of Redis, with single-flight.

A hit in the process layer costs no network round trip. Entries carry their
absolute expiry, so a value copied from Redis into a process never outlives the
Redis entry. Concurrent misses for one key run the loader once per process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import RedisUnavailable
from shared.singleflight import SingleFlight


@dataclass(frozen=True, slots=True)
class CacheResult:
    value: Any
    cached: bool
    level: str  # "memory" | "redis" | "source"


class LocalTTL:
    """A small LRU with absolute (wall clock) expiry per entry."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str, now: float) -> Any | None:
        item = self.entry(key, now)
        return None if item is None else item[1]

    def entry(self, key: str, now: float) -> tuple[float, Any] | None:
        """(expires_at, value) of a fresh entry; expires_at identifies the loaded value."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._data[key]
            return None
        return item

    def set(self, key: str, value: Any, expires_at: float) -> None:
        self._data[key] = (expires_at, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class TwoLevelCache:
    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int, max_local: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_s
        self.local = LocalTTL(max_local)
        self._flight: SingleFlight[CacheResult] = SingleFlight()

    async def get_or_load(self, key: str, loader: Callable[[], Awaitable[Any]]) -> CacheResult:
        value = self.local.get(key, time.time())
        if value is not None:
            return CacheResult(value, True, "memory")
        return await self._flight.do(key, lambda: self._miss(key, loader))

    async def _miss(self, key: str, loader: Callable[[], Awaitable[Any]]) -> CacheResult:
        redis_key = self._prefix + key
        try:
            raw = await self._redis.get(redis_key)
        except RedisError as exc:
            raise RedisUnavailable(f"cache unavailable: {type(exc).__name__}") from exc
        if raw is not None:
            stored = orjson.loads(raw)
            if stored["expires_at"] > time.time():
                self.local.set(key, stored["value"], stored["expires_at"])
                return CacheResult(stored["value"], True, "redis")
        value = await loader()
        expires_at = time.time() + self._ttl
        payload = orjson.dumps({"value": value, "expires_at": expires_at})
        try:
            await self._redis.set(redis_key, payload, ex=self._ttl)
        except RedisError as exc:
            raise RedisUnavailable(f"cache unavailable: {type(exc).__name__}") from exc
        self.local.set(key, value, expires_at)
        return CacheResult(value, False, "source")
