"""The worker's health key: `health:worker:{consumer}`, a JSON snapshot refreshed every third of
its TTL, so a dead worker's key expires by itself, and deleted when the worker stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.constants import KEY_WORKER_HEALTH


class Heartbeat:
    def __init__(
        self, redis: Redis, consumer: str, *, ttl_s: int, snapshot: Callable[[], dict[str, Any]]
    ) -> None:
        self._redis = redis
        self._key = f"{KEY_WORKER_HEALTH}{consumer}"
        self._ttl_s = ttl_s
        self._snapshot = snapshot

    async def loop(self) -> None:
        period = max(0.1, self._ttl_s / 3)
        while True:
            await self.beat()
            await asyncio.sleep(period)

    async def beat(self) -> None:
        """SET health:worker:{consumer} <json> EX ttl."""
        try:
            await self._redis.set(self._key, orjson.dumps(self._snapshot()), ex=self._ttl_s)
        except (RedisError, OSError) as exc:
            logger.warning("health update failed", error=str(exc))

    async def delete(self) -> None:
        try:
            await self._redis.delete(self._key)
        except (RedisError, OSError) as exc:
            logger.warning("could not delete health key; it expires by TTL", error=str(exc))
