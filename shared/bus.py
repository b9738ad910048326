"""Publishing to the Redis streams (XADD with an approximate MAXLEN cap); entries come
signed from `Event.to_fields`."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.events import Event


async def publish(redis: Redis, event: Event, *, maxlen: int) -> str:
    """Append `event` to its stream; returns the entry id."""
    entry_id = await redis.xadd(
        event.stream,
        event.to_fields(),  # type: ignore[arg-type]
        maxlen=maxlen,
        approximate=True,
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
