"""Reading trades and stake actions from the database."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from tortoise.exceptions import BaseORMException

from gateway.trades.schemas import (
    SentimentOut,
    StakeActionOut,
    StakeActionPage,
    TradeOut,
    TweetsOut,
)
from shared.db.models import SentimentScore, StakeAction, Trade, TweetBatch
from shared.errors import DatabaseUnavailable, NotFound

T = TypeVar("T")


async def _db(query: Awaitable[T]) -> T:
    try:
        return await query
    except (BaseORMException, OSError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


def stake_action_out(row: StakeAction) -> StakeActionOut:
    return StakeActionOut(
        id=row.id,
        trade_id=row.trade_id,
        netuid=row.netuid,
        hotkey=row.hotkey,
        coldkey=row.coldkey,
        direction=row.direction,
        status=row.status,
        reason=row.reason,
        score=row.score,
        amount_tao=None if row.amount_tao is None else str(row.amount_tao),
        amount_alpha=None if row.amount_alpha is None else str(row.amount_alpha),
        success=row.success,
        message=row.message,
        error_name=row.error_name,
        extrinsic_hash=row.extrinsic_hash,
        block_hash=row.block_hash,
        block=row.block,
        fee_rao=row.fee_rao,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get_trade(trade_id: str) -> TradeOut:
    trade = await _db(Trade.get_or_none(trade_id=trade_id))
    if trade is None:
        raise NotFound(f"no trade {trade_id!r}")
    tweets = await _db(TweetBatch.get_or_none(trade_id=trade_id))
    sentiment = await _db(SentimentScore.get_or_none(trade_id=trade_id))
    action = await _db(StakeAction.get_or_none(trade_id=trade_id))
    return TradeOut(
        trade_id=trade.trade_id,
        netuid=trade.netuid,
        hotkey=trade.hotkey,
        source=trade.source,
        status=trade.status,
        reason=trade.reason,
        requested_by=trade.requested_by,
        request_id=trade.request_id,
        created_at=trade.created_at,
        updated_at=trade.updated_at,
        tweets=None
        if tweets is None
        else TweetsOut(
            source=tweets.source,
            query=tweets.query,
            count=tweets.count,
            tweets=tweets.tweets,
            error=tweets.error,
            fetched_at=tweets.fetched_at,
        ),
        sentiment=None
        if sentiment is None
        else SentimentOut(
            score=sentiment.score,
            backend=sentiment.backend,
            model=sentiment.model,
            reason=sentiment.reason,
            fallback_reason=sentiment.fallback_reason,
            scored_at=sentiment.scored_at,
        ),
        stake_action=None if action is None else stake_action_out(action),
    )


async def list_stake_actions(
    *,
    netuid: int | None,
    hotkey: str | None,
    status: str | None,
    direction: str | None,
    limit: int,
    cursor: int | None,
) -> StakeActionPage:
    """Newest first; the cursor is the last id seen (stable under concurrent inserts)."""
    query = StakeAction.all()
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
    items = [stake_action_out(row) for row in rows[:limit]]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return StakeActionPage(items=items, next_cursor=next_cursor)
