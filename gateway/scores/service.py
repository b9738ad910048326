"""Reading sentiment scores, scoped through their trades' owner."""

from __future__ import annotations

from gateway.db import guarded
from gateway.listing import Listing
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


async def list_scores(netuid: int, listing: Listing[int]) -> ScorePage:
    """Newest first; the cursor is the last id seen. A score's hotkey is its trade's."""
    query = listing.scoped(
        SentimentScore.filter(netuid=netuid), hotkey_field="trade__hotkey", id__lt=listing.cursor
    )
    rows = await guarded(query.order_by("-id").limit(listing.limit + 1).values(**_FIELDS))
    page, next_cursor = listing.cut(rows, lambda row: str(row["id"]))
    return ScorePage(
        netuid=netuid, items=[ScoreOut.model_validate(row) for row in page], next_cursor=next_cursor
    )
