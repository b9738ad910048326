"""`python -m pipeline replay`: publish a trade's entries again to watch its path.

A replay keeps the trade_id, so every stage answers from what it stored (the
stake stage says "already executed"): it never produces a second extrinsic. It also keeps
the request's time, so a trade's age (MAX_EVENT_AGE_S) is not reset by replaying it.
`--as-new-trade` starts a new trade (new trade_id) from the original request,
which does trade for real, once, and so goes through the same cooldown
reservation as any new trade (refused inside the cooldown).

Replayed entries have changed fields (source=replay, new event_id...), so they
are signed again; only entries whose signature holds are replayed, or a forged
entry could be laundered into a signed one.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from redis.asyncio import Redis

from shared.constants import EVENT_STREAMS, STREAM_DIVIDEND_REQUESTED
from shared.db.models import Trade
from shared.events import DividendRequested, decode_fields, text
from shared.ids import iso, new_id, utcnow
from shared.signing import is_signed, sign
from shared.trades import TradeTrigger

PAGE = 1000


class ReplayError(Exception):
    pass


async def entries_between(
    redis: Redis, stream: str, start: str, end: str = "+"
) -> list[tuple[str, dict[str, str]]]:
    """The validly signed entries of `stream` in [start, end]; others are skipped (logged)."""
    out: list[tuple[str, dict[str, str]]] = []
    cursor = start
    while True:
        page = await redis.xrange(stream, min=cursor, max=end, count=PAGE) or []
        for eid, raw in page:
            if eid is None or raw is None:
                continue
            fields = decode_fields(raw)
            if is_signed(fields):
                out.append((text(eid), fields))
            else:
                logger.warning("not replaying {} {}: unsigned or badly signed", stream, text(eid))
        if len(page) < PAGE:
            return out
        cursor = "(" + text(page[-1][0])


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
        occurred_at=trade.created_at,  # when it was requested
        netuid=trade.netuid,
        hotkey=trade.hotkey,
        source="manual",
        request_id=trade.request_id,
        requested_by=trade.requested_by,
    )
    return event.to_fields()


def as_replay(fields: dict[str, str], *, new_trade: bool) -> dict[str, str]:
    """`fields` as a replay, signed again. A new trade is a new request, stamped now; a
    replay of the same trade keeps the time of the event it replays, so the trade's age
    (MAX_EVENT_AGE_S) still counts from its request however often, or late, it is replayed."""
    out = dict(fields)
    out["event_id"] = new_id()
    out["source"] = "replay"
    out["replay_of"] = fields.get("trade_id", "")
    if new_trade:
        out["trade_id"] = new_id()
        out["occurred_at"] = iso(utcnow())
    return sign(out)


def is_new_trade(stream: str, fields: dict[str, str]) -> bool:
    return stream == STREAM_DIVIDEND_REQUESTED and fields.get("trade_id") != fields.get("replay_of")


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
    if new_trade and stream != STREAM_DIVIDEND_REQUESTED:
        # A new trade started mid-pipeline would skip the cooldown reservation.
        raise ReplayError(
            f"--as-new-trade starts from the request: use --stream {STREAM_DIVIDEND_REQUESTED} "
            "or --trade ID"
        )
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
    redis: Redis, plan: list[tuple[str, dict[str, str]]], *, maxlen: int, cooldown_s: int
) -> list[str]:
    """Publish `plan`; the ids published. A new trade goes through the trade trigger, so one
    inside its pair's cooldown is refused: ReplayError once the rest of the plan is out."""
    ids: list[str] = []
    refused: list[str] = []
    trigger = TradeTrigger(redis, cooldown_s=cooldown_s, maxlen=maxlen)
    for stream, fields in plan:
        if is_new_trade(stream, fields):
            try:
                event = DividendRequested.from_fields(fields)
            except ValueError as exc:
                refused.append(f"entry of trade {fields.get('replay_of')} is malformed: {exc}")
                continue
            result = await trigger.trigger(event)
            if result.entry_id is None:
                refused.append(
                    f"new trade for netuid {event.netuid} hotkey {event.hotkey} refused: the pair "
                    f"is inside its trade cooldown ({result.cooldown_left_s:.0f} s left, "
                    f"TRADE_COOLDOWN_S={cooldown_s}); nothing was published for it"
                )
                continue
            ids.append(result.entry_id)
            continue
        entry_id = await redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    if refused:
        done = f"; published {len(ids)} entries: {', '.join(ids)}" if ids else ""
        raise ReplayError("; ".join(refused) + done)
    return ids


# `replay --json`: {"dry_run": bool, "entries": [one object per entry, these keys],
# "published": [entry ids] (empty on a dry run)}
JSON_KEYS = {
    "stream": "the stream it is (or would be) published to",
    "trade_id": "its trade (new with --as-new-trade)",
    "replay_of": "the trade it replays",
    "type": "the event type",
    "fields": "every field of the entry as published (signed)",
}


def plan_json(plan: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    return [
        {
            "stream": stream,
            "trade_id": fields.get("trade_id"),
            "replay_of": fields.get("replay_of"),
            "type": fields.get("type"),
            "fields": fields,
        }
        for stream, fields in plan
    ]
