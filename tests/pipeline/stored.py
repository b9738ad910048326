"""Trades as the stages before the stake stage leave them: a `trades` row and its stored
sentiment score, and the `sentiment_scored` event that describes them.

The stake stage acts only on stored rows, so a test that publishes `sentiment_scored`
by hand stores them first.
"""

from __future__ import annotations

from datetime import datetime

from shared.db.models import SentimentScore, Trade
from shared.events import SentimentScored, Source
from tests.fakes.chain import ALICE


async def stored_scored(
    trade_id: str,
    score: int | None = 60,
    *,
    netuid: int = 3,
    hotkey: str = ALICE,
    source: Source = "api",
    created_at: datetime | None = None,
    replay_of: str | None = None,
) -> SentimentScored:
    trade = await Trade.create(
        trade_id=trade_id, netuid=netuid, hotkey=hotkey, source=source, replay_of=replay_of
    )
    if created_at is not None:
        await Trade.filter(trade_id=trade_id).update(created_at=created_at)
    await SentimentScore.create(trade=trade, netuid=netuid, score=score, backend="llm")
    return SentimentScored(
        trade_id=trade_id, netuid=netuid, hotkey=hotkey, source=source, score=score, backend="llm"
    )
