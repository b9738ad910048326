from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ScoreOut(BaseModel):
    id: int = Field(description="The score's row id (what `cursor` counts down from).")
    trade_id: str
    hotkey: str = Field(description="The trade's hotkey.")
    score: int | None = Field(description="-100..100; null when nothing could be scored.")
    backend: str = Field(description="What produced it: `llm`, `vader`, or `none`.")
    model: str | None
    scored_at: datetime
    trade_status: str = Field(description="The trade's latest status.")


class ScorePage(BaseModel):
    netuid: int
    items: list[ScoreOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")
