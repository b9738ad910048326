"""Reading trades and stake actions from the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel
from tortoise.expressions import Q

from gateway.db import guarded
from gateway.listing import Listing, narrowed
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
    trade = await guarded(narrowed(Trade.filter(trade_id=trade_id), requested_by=owner).first())
    if trade is None:
        raise NotFound(f"no trade {trade_id!r}")
    tweets, sentiment, action = await asyncio.gather(
        guarded(TweetBatch.get_or_none(trade_id=trade_id)),
        guarded(SentimentScore.get_or_none(trade_id=trade_id)),
        guarded(StakeAction.get_or_none(trade_id=trade_id)),
    )
    summary = _out(TradeSummary, trade)
    return TradeOut(
        **summary.model_dump(),
        tweets=_out_or_none(TweetsOut, tweets),
        sentiment=_out_or_none(SentimentOut, sentiment),
        stake_action=_out_or_none(StakeActionOut, action),
    )


def _out(schema: type[M], row: object) -> M:
    return schema.model_validate(row, from_attributes=True)


def _out_or_none(schema: type[M], row: object | None) -> M | None:
    return None if row is None else _out(schema, row)


async def list_stake_actions(
    listing: Listing[int], *, status: str | None, direction: str | None
) -> StakeActionPage:
    """Newest first; the cursor is the last id seen (stable under concurrent inserts)."""
    query = listing.scoped(
        StakeAction.all(), status=status, direction=direction, id__lt=listing.cursor
    )
    rows = await guarded(query.order_by("-id").limit(listing.limit + 1))
    page, next_cursor = listing.cut(rows, lambda row: str(row.id))
    return StakeActionPage(
        items=[_out(StakeActionOut, row) for row in page], next_cursor=next_cursor
    )


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


async def list_trades(listing: Listing[tuple[datetime, str]], *, status: str | None) -> TradePage:
    """Newest first, in the order of `trade_cursor`."""
    query = listing.scoped(Trade.all(), owner_field="requested_by", status=status)
    if listing.cursor is not None:
        at, trade_id = listing.cursor
        query = query.filter(Q(created_at__lt=at) | Q(created_at=at, trade_id__lt=trade_id))
    rows = await guarded(query.order_by("-created_at", "-trade_id").limit(listing.limit + 1))
    page, next_cursor = listing.cut(rows, lambda row: trade_cursor(row.created_at, row.trade_id))
    return TradePage(items=[_out(TradeSummary, row) for row in page], next_cursor=next_cursor)
