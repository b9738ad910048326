from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field


class TweetsOut(BaseModel):
    source: str
    query: str
    count: int
    tweets: list[dict[str, Any]]
    error: str | None
    fetched_at: datetime


class SentimentOut(BaseModel):
    score: int | None
    backend: str
    model: str | None
    reason: str | None
    fallback_reason: str | None
    scored_at: datetime


class StakeActionOut(BaseModel):
    id: int
    trade_id: str
    netuid: int
    hotkey: str
    coldkey: str | None
    direction: str
    status: str
    reason: str | None
    score: int | None
    amount_tao: Decimal | None
    amount_alpha: Decimal | None
    success: bool | None
    message: str | None
    error_name: str | None
    extrinsic_hash: str | None
    block_hash: str | None
    block: int | None
    fee_rao: int | None
    created_at: datetime
    updated_at: datetime


class TradeSummary(BaseModel):
    trade_id: str
    netuid: int
    hotkey: str
    source: str
    status: str
    reason: str | None
    requested_by: str | None
    request_id: str | None
    replay_of: str | None
    created_at: datetime
    updated_at: datetime


class TradeOut(TradeSummary):
    tweets: TweetsOut | None = None
    sentiment: SentimentOut | None = None
    stake_action: StakeActionOut | None = None


class StakeActionPage(BaseModel):
    items: list[StakeActionOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class TradeRequest(BaseModel):
    netuid: int = Field(ge=0, le=65535)
    hotkey: str = Field(min_length=1, max_length=64)


class TradeTriggered(BaseModel):
    trade_id: str
    stake_tx_triggered: bool
    trade_status: str
    trade_detail: str
