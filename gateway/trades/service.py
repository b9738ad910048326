"""Reading trades and stake actions from the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from pydantic import BaseModel
from tortoise.exceptions import BaseORMException

from gateway.trades.schemas import (
    SentimentOut,
    StakeActionOut,
    StakeActionPage,
    TradeOut,
    TradeSummary,
    TweetsOut,
)
from shared.db.models import SentimentScore, StakeAction, Trade, TweetBatch
from shared.db.schema import database_error
from shared.errors import NotFound

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


async def _db(query: Awaitable[T]) -> T:
    try:
        return await query
    except (BaseORMException, OSError) as exc:
        raise database_error(exc) from exc


async def get_trade(trade_id: str, *, owner: str | None) -> TradeOut:
    """The trade if `owner` requested it (any trade when `owner` is None, for admins).

    Another owner's trade is reported exactly like a missing one, so ids cannot be probed.
    """
    query = Trade.filter(trade_id=trade_id)
    if owner is not None:
        query = query.filter(requested_by=owner)
    trade = await _db(query.first())
    if trade is None:
        raise NotFound(f"no trade {trade_id!r}")
    tweets, sentiment, action = await asyncio.gather(
        _db(TweetBatch.get_or_none(trade_id=trade_id)),
        _db(SentimentScore.get_or_none(trade_id=trade_id)),
        _db(StakeAction.get_or_none(trade_id=trade_id)),
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
    rows = await _db(query.order_by("-id").limit(limit + 1))
    items = [StakeActionOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return StakeActionPage(items=items, next_cursor=next_cursor)
