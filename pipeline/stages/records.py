"""Trade records shared by the stages: every stage can be the first to see a trade."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis

from pipeline.worker import Drop, StreamEntry
from shared.bus import publish
from shared.db.bulk import insert_many, update_by
from shared.db.models import Trade
from shared.events import Event, decode_fields
from shared.ids import utcnow
from shared.signing import SignatureError, verify

E = TypeVar("E", bound=Event)


def parse_event(cls: type[E], entry: StreamEntry) -> E:
    """The entry as `cls`, from a holder of EVENT_SIGNING_KEY only.

    An unsigned or badly signed entry, or one that can never parse (wrong type, bad
    SS58 hotkey, netuid out of range), goes straight to the dead letters with the
    reason, before the stage touches the database or publishes anything.
    """
    fields = decode_fields(entry.fields)
    try:
        verify(fields)
    except SignatureError as exc:
        raise Drop(f"{exc} in {cls.TYPE} entry") from exc
    try:
        return cls.from_fields(fields)
    except (ValidationError, ValueError) as exc:
        raise Drop(f"malformed {cls.TYPE} entry: {exc}") from exc


async def ensure_trade(event: Event) -> None:
    """Record the trade if this is the first time it is seen."""
    await ensure_trades([event])


async def ensure_trades(events: Iterable[Event]) -> None:
    """Record the trades seen for the first time (one INSERT … ON CONFLICT DO NOTHING)."""
    await insert_many(trade_rows(events))


def trade_rows(events: Iterable[Event]) -> list[Trade]:
    """The trade rows of `events`, one per trade, in trade order (one lock order for
    concurrent inserts).

    A trade's age starts when it was requested (the signed event's time, never in the
    future), not when a stage first got to it: after an outage MAX_EVENT_AGE_S must still
    see how long the request waited."""
    now = utcnow()
    trades = {
        event.trade_id: Trade(
            trade_id=event.trade_id,
            netuid=event.netuid,
            hotkey=event.hotkey,
            source=event.source,
            request_id=getattr(event, "request_id", None),
            requested_by=getattr(event, "requested_by", None),
            replay_of=getattr(event, "replay_of", None),
            created_at=min(event.occurred_at, now),
        )
        for event in events
    }
    return [trades[trade_id] for trade_id in sorted(trades)]


async def set_status(trade_id: str, status: str, reason: str | None = None) -> None:
    await set_statuses([trade_id], status, reason)


async def set_statuses(trade_ids: Sequence[str], status: str, reason: str | None = None) -> None:
    """One UPDATE of every trade in `trade_ids` to `status` (and `reason`, when given)."""
    values: dict[str, object] = {"status": status, "updated_at": utcnow()}
    if reason is not None:
        values["reason"] = reason
    await update_by(Trade, "trade_id", trade_ids, values)


class Publisher:
    """Publishes a stage's event; called only after the record it describes is committed."""

    def __init__(self, redis: Redis, *, maxlen: int) -> None:
        self._redis = redis
        self._maxlen = maxlen

    async def __call__(self, event: Event, *, status: str | None = None) -> None:
        """Publish `event`; with `status`, record the trade's new status at the same time
        (both follow the committed record, neither depends on the other)."""
        sent = publish(self._redis, event, maxlen=self._maxlen)
        if status is None:
            await sent
        else:
            await asyncio.gather(sent, set_status(event.trade_id, status))

    async def many(self, events: Sequence[Event]) -> None:
        """Publish `events` in one round trip (a pipeline of XADDs, not a transaction)."""
        if not events:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    event.stream,
                    event.to_fields(),  # type: ignore[arg-type]
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()
