"""Per-token rate limits counted in-process and settled with Redis in the background.

A request never waits on Redis for its rate-limit check: each process counts
hits locally against the last global count it saw, and a background task adds
its hits to a shared per-window Redis counter every RATE_LIMIT_SYNC_S. Within
one process the limit is exact; across N processes a burst can overshoot by at
most what N processes admit in one sync interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.metrics import RATE_LIMITED
from shared.constants import KEY_RATE_LIMIT, RATE_LIMIT_WINDOW_S
from shared.errors import RateLimited

WindowKey = tuple[str, str, int]


class RateLimiter:
    def __init__(self, redis: Redis, *, sync_s: float, window_s: int = RATE_LIMIT_WINDOW_S) -> None:
        self._redis = redis
        self._sync_s = sync_s
        self._window = window_s
        self._pending: defaultdict[WindowKey, int] = defaultdict(int)
        self._global: dict[WindowKey, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def hit(self, subject: str, kind: str, limit: int) -> None:
        """Count one request; raise `RateLimited` when the window's budget is spent."""
        now = time.time()
        key = (subject, kind, int(now // self._window))
        if self._global.get(key, 0) + self._pending[key] < limit:
            self._pending[key] += 1
            return
        RATE_LIMITED.labels(kind).inc()
        retry_after = max(1, math.ceil((int(now // self._window) + 1) * self._window - now))
        raise RateLimited(
            f"rate limit of {limit} {kind} requests per {self._window}s reached",
            retry_after_s=retry_after,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ratelimit-sync")

    async def stop(self) -> None:
        """Stop between syncs (never mid-sync, which would count a batch twice), then flush."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 3)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.sync(), 2)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._sync_s)
            if self._stopping.is_set():
                return
            try:
                await self.sync()
            except (RedisError, OSError) as exc:
                logger.warning("rate-limit sync failed; counting locally", error=type(exc).__name__)

    async def sync(self) -> None:
        current = int(time.time() // self._window)
        for key in [k for k in self._global if k[2] < current - 1]:
            del self._global[key]
        for key in [k for k, v in self._pending.items() if k[2] < current - 1 or v == 0]:
            del self._pending[key]
        batch = [(key, count) for key, count in self._pending.items() if count]
        if not batch:
            return
        pipe = self._redis.pipeline(transaction=False)
        for (subject, kind, window), count in batch:
            redis_key = f"{KEY_RATE_LIMIT}{kind}:{subject}:{window}"
            pipe.incrby(redis_key, count)
            pipe.expire(redis_key, self._window * 2)
        results = await pipe.execute()
        for index, (key, count) in enumerate(batch):
            self._pending[key] -= count
            self._global[key] = int(results[index * 2])
