"""Reading sentiment scores, scoped through their trades' owner."""

from __future__ import annotations

from gateway.db import guarded
from gateway.scores.schemas import ScoreOut, ScorePage
from shared.db.models import SentimentScore

_FIELDS = {
    "id": "id",
    "trade_id": "trade_id",
    "hotkey": "trade__hotkey",
    "score": "score",
    "backend": "backend",
    "model": "model",
    "scored_at": "scored_at",
    "trade_status": "trade__status",
}


async def list_scores(
    netuid: int, *, owner: str | None, hotkey: str | None, limit: int, cursor: int | None
) -> ScorePage:
    """Newest first; the cursor is the last id seen. Only the scores of `owner`'s trades, or
    every score when `owner` is None (admins)."""
    query = SentimentScore.filter(netuid=netuid)
    if owner is not None:
        query = query.filter(trade__requested_by=owner)
    if hotkey is not None:
        query = query.filter(trade__hotkey=hotkey)
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    rows = await guarded(query.order_by("-id").limit(limit + 1).values(**_FIELDS))
    items = [ScoreOut.model_validate(row) for row in rows[:limit]]
    next_cursor = str(rows[limit - 1]["id"]) if len(rows) > limit else None
    return ScorePage(netuid=netuid, items=items, next_cursor=next_cursor)
