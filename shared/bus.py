"""Publishing to the Redis streams (XADD with an approximate MAXLEN cap); entries come
signed from `Event.to_fields`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from shared.events import Event


def _xadd(target: Any, event: Event, maxlen: int) -> Any:
    """XADD `event` on a client (awaitable) or queued on a pipeline."""
    return target.xadd(event.stream, event.to_fields(), maxlen=maxlen, approximate=True)


async def publish(redis: Redis, event: Event, *, maxlen: int) -> str:
    """Append `event` to its stream; returns the entry id."""
    entry_id = await _xadd(redis, event, maxlen)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def publish_many(redis: Redis, events: Sequence[Event], *, maxlen: int) -> None:
    """Append `events` in one round trip (a pipeline of XADDs, not a transaction)."""
    if not events:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            _xadd(pipe, event, maxlen)
        await pipe.execute()
