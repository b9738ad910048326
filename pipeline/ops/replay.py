"""`python -m pipeline replay`: publish a trade's entries again to watch its path.

A replay keeps the trade_id, so every stage answers from what it stored (the
stake stage says "already executed"): it never produces a second extrinsic.
`--as-new-trade` starts a new trade (new trade_id) from the original request,
which does trade for real, once.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.constants import EVENT_STREAMS, STREAM_DIVIDEND_REQUESTED
from shared.db.models import Trade
from shared.events import DividendRequested, decode_fields, text
from shared.ids import iso, new_id, utcnow

PAGE = 1000


class ReplayError(Exception):
    pass


async def entries_between(
    redis: Redis, stream: str, start: str, end: str = "+"
) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    cursor = start
    while True:
        page = await redis.xrange(stream, min=cursor, max=end, count=PAGE) or []
        for eid, fields in page:
            if eid is not None and fields is not None:
                out.append((text(eid), decode_fields(fields)))
        if len(page) < PAGE:
            return out
        cursor = "(" + out[-1][0]


async def trade_request(redis: Redis, trade_id: str) -> dict[str, str]:
    """The trade's original dividend_requested fields (from the stream, else its record)."""
    for _, fields in await entries_between(redis, STREAM_DIVIDEND_REQUESTED, "-"):
        if fields.get("trade_id") == trade_id and fields.get("source") != "replay":
            return fields
    trade = await Trade.get_or_none(trade_id=trade_id)
    if trade is None:
        raise ReplayError(f"no trade {trade_id} in {STREAM_DIVIDEND_REQUESTED} or the database")
    event = DividendRequested(
        trade_id=trade.trade_id,
        netuid=trade.netuid,
        hotkey=trade.hotkey,
        source="manual",
        request_id=trade.request_id,
        requested_by=trade.requested_by,
    )
    return event.to_fields()


def as_replay(fields: dict[str, str], *, new_trade: bool) -> dict[str, str]:
    out = dict(fields)
    out["event_id"] = new_id()
    out["occurred_at"] = iso(utcnow())
    out["source"] = "replay"
    out["replay_of"] = fields.get("trade_id", "")
    if new_trade:
        out["trade_id"] = new_id()
    return out


async def plan_trade(
    redis: Redis, trade_id: str, *, new_trade: bool
) -> list[tuple[str, dict[str, str]]]:
    return [
        (
            STREAM_DIVIDEND_REQUESTED,
            as_replay(await trade_request(redis, trade_id), new_trade=new_trade),
        )
    ]


async def plan_range(
    redis: Redis, stream: str, start: str, end: str, *, new_trade: bool
) -> list[tuple[str, dict[str, str]]]:
    if stream not in EVENT_STREAMS.values() or stream.endswith("dead_letter"):
        raise ReplayError(f"unknown stream {stream!r}; use one of the event streams")
    entries = await entries_between(redis, stream, start, end)
    if not entries:
        raise ReplayError(f"no entries in {stream} between {start} and {end}")
    if new_trade:
        # A stream can hold one trade's event more than once (redeliveries republish):
        # one original trade must become exactly one new trade.
        first: dict[str, dict[str, str]] = {}
        for _, fields in entries:
            first.setdefault(fields.get("trade_id", ""), fields)
        return [(stream, as_replay(fields, new_trade=True)) for fields in first.values()]
    return [(stream, as_replay(fields, new_trade=False)) for _, fields in entries]


async def publish_plan(
    redis: Redis, plan: list[tuple[str, dict[str, str]]], *, maxlen: int
) -> list[str]:
    ids = []
    for stream, fields in plan:
        entry_id = await redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids
