"""Trade records shared by the stages: every stage can be the first to see a trade."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis

from pipeline.worker import Drop, StreamEntry
from shared.bus import publish
from shared.db.models import Trade
from shared.events import Event

E = TypeVar("E", bound=Event)


def parse_event(cls: type[E], entry: StreamEntry) -> E:
    """The entry as `cls`; an entry that can never parse goes straight to the dead letters."""
    try:
        return cls.from_fields(entry.fields)
    except (ValidationError, ValueError) as exc:
        raise Drop(f"malformed {cls.TYPE} entry: {exc}") from exc


async def ensure_trade(event: Event) -> Trade:
    """The trade's row, created from the event if this is the first time it is seen."""
    trade, _ = await Trade.get_or_create(
        trade_id=event.trade_id,
        defaults={
            "netuid": event.netuid,
            "hotkey": event.hotkey,
            "source": event.source,
            "request_id": getattr(event, "request_id", None),
            "requested_by": getattr(event, "requested_by", None),
            "replay_of": getattr(event, "replay_of", None),
        },
    )
    return trade


async def set_status(trade: Trade, status: str, reason: str | None = None) -> None:
    trade.status = status
    if reason is not None:
        trade.reason = reason
    await trade.save(update_fields=["status", "reason", "updated_at"])


class Publisher:
    """Publishes a stage's event; called only after the record it describes is committed."""

    def __init__(self, redis: Redis, *, maxlen: int) -> None:
        self._redis = redis
        self._maxlen = maxlen

    async def __call__(self, event: Event) -> str:
        return await publish(self._redis, event, maxlen=self._maxlen)
