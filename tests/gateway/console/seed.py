"""Rows for the console's routes: trades with their score and stake action, by owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.db.models import SentimentScore, StakeAction, Trade, TweetBatch
from shared.ids import new_id

COLDKEY = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def seed_trade(
    owner: str | None,
    netuid: int,
    hotkey: str,
    *,
    status: str = "succeeded",
    score: int | None = None,
    backend: str = "llm",
    tweets: list[dict[str, Any]] | None = None,
    action: dict[str, Any] | None = None,
    at: datetime | None = None,
    trade_id: str | None = None,
) -> Trade:
    """One trade; with `score`, its sentiment row; with `action`, its stake action (fields
    over the defaults below); `at` sets every row's timestamps."""
    trade = await Trade.create(
        trade_id=trade_id or new_id(),
        netuid=netuid,
        hotkey=hotkey,
        source="api",
        status=status,
        requested_by=owner,
    )
    if tweets is not None:
        await TweetBatch.create(
            trade=trade, source="datura", query=f"Netuid {netuid}", count=len(tweets), tweets=tweets
        )
    if score is not None or backend == "none":
        await SentimentScore.create(trade=trade, netuid=netuid, score=score, backend=backend)
    if action is not None:
        values: dict[str, Any] = {
            "netuid": netuid,
            "hotkey": hotkey,
            "coldkey": COLDKEY,
            "direction": "add",
            "status": "succeeded",
            "success": True,
        }
        values.update(action)
        await StakeAction.create(trade=trade, **values)
    if at is not None:
        await Trade.filter(trade_id=trade.trade_id).update(created_at=at, updated_at=at)
        await SentimentScore.filter(trade_id=trade.trade_id).update(scored_at=at)
        await StakeAction.filter(trade_id=trade.trade_id).update(created_at=at, updated_at=at)
        await trade.refresh_from_db()
    return trade


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def tao(text: str) -> Decimal:
    return Decimal(text)
