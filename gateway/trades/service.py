"""Reading trades and stake actions from the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel
from tortoise.expressions import Q

from gateway.db import guarded
from gateway.trades.schemas import (
    SentimentOut,
    StakeActionOut,
    StakeActionPage,
    TradeOut,
    TradePage,
    TradeSummary,
    TweetsOut,
)
from shared.db.models import SentimentScore, StakeAction, Trade, TweetBatch
from shared.errors import NotFound

M = TypeVar("M", bound=BaseModel)


async def get_trade(trade_id: str, *, owner: str | None) -> TradeOut:
    """The trade if `owner` requested it (any trade when `owner` is None, for admins).

    Another owner's trade is reported exactly like a missing one, so ids cannot be probed.
    """
    query = Trade.filter(trade_id=trade_id)
    if owner is not None:
        query = query.filter(requested_by=owner)
    trade = await guarded(query.first())
    if trade is None:
        raise NotFound(f"no trade {trade_id!r}")
    tweets, sentiment, action = await asyncio.gather(
        guarded(TweetBatch.get_or_none(trade_id=trade_id)),
        guarded(SentimentScore.get_or_none(trade_id=trade_id)),
        guarded(StakeAction.get_or_none(trade_id=trade_id)),
    )
    summary = TradeSummary.model_validate(trade, from_attributes=True)
    return TradeOut(
        **summary.model_dump(),
        tweets=_out(TweetsOut, tweets),
        sentiment=_out(SentimentOut, sentiment),
        stake_action=_out(StakeActionOut, action),
    )


def _out(schema: type[M], row: object | None) -> M | None:
    return None if row is None else schema.model_validate(row, from_attributes=True)


async def list_stake_actions(
    *,
    owner: str | None,
    netuid: int | None,
    hotkey: str | None,
    status: str | None,
    direction: str | None,
    limit: int,
    cursor: int | None,
) -> StakeActionPage:
    """Newest first; the cursor is the last id seen (stable under concurrent inserts).

    Only the actions of `owner`'s trades, or every action when `owner` is None (admins).
    """
    query = StakeAction.all()
    if owner is not None:
        query = query.filter(trade__requested_by=owner)
    if netuid is not None:
        query = query.filter(netuid=netuid)
    if hotkey is not None:
        query = query.filter(hotkey=hotkey)
    if status is not None:
        query = query.filter(status=status)
    if direction is not None:
        query = query.filter(direction=direction)
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    rows = await guarded(query.order_by("-id").limit(limit + 1))
    items = [StakeActionOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return StakeActionPage(items=items, next_cursor=next_cursor)


def trade_cursor(created_at: datetime, trade_id: str) -> str:
    """`<microseconds since the epoch>.<trade_id>`: the position of a trade in the newest-first
    order (created_at, then trade_id), so a page boundary never splits or repeats a trade."""
    micros = int(created_at.timestamp()) * 1_000_000 + created_at.microsecond
    return f"{micros}.{trade_id}"


def parse_trade_cursor(cursor: str) -> tuple[datetime, str]:
    """The inverse of `trade_cursor` (the router has checked its pattern)."""
    micros, _, trade_id = cursor.partition(".")
    seconds, rest = divmod(int(micros), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest), trade_id


async def list_trades(
    *,
    owner: str | None,
    netuid: int | None,
    hotkey: str | None,
    status: str | None,
    limit: int,
    cursor: tuple[datetime, str] | None,
) -> TradePage:
    """Newest first. Only `owner`'s trades, or every trade when `owner` is None (admins)."""
    query = Trade.all()
    if owner is not None:
        query = query.filter(requested_by=owner)
    if netuid is not None:
        query = query.filter(netuid=netuid)
    if hotkey is not None:
        query = query.filter(hotkey=hotkey)
    if status is not None:
        query = query.filter(status=status)
    if cursor is not None:
        at, trade_id = cursor
        query = query.filter(Q(created_at__lt=at) | Q(created_at=at, trade_id__lt=trade_id))
    rows = await guarded(query.order_by("-created_at", "-trade_id").limit(limit + 1))
    items = [TradeSummary.model_validate(row, from_attributes=True) for row in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = None if last is None else trade_cursor(last.created_at, last.trade_id)
    return TradePage(items=items, next_cursor=next_cursor)
