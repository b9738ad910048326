from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from gateway.deps import SS58_CONSTRAINTS, SS58_DESCRIPTION, SS58_EXAMPLE
from shared.logging import mask
from shared.tweets import Tweet

# Trade ids are 32 lowercase hex characters (shared.ids.new_id); the column holds 32.
TRADE_ID_PATTERN = "^[0-9A-Za-z_-]{1,32}$"
TRADE_ID_EXAMPLE = "3f9c2b8e0d4a4c55a1f0e6b7c8d9e0f1"
# A trades page cursor: `<microseconds since the epoch>.<trade_id>` (gateway.trades.service).
TRADE_CURSOR_PATTERN = "^[0-9]{1,16}\\.[0-9A-Za-z_-]{1,32}$"

# A stored reason or message: text the pipeline wrote, which can quote a node or an outside
# API. Served with every configured secret masked, as the logs are.
Recorded = Annotated[str | None, AfterValidator(lambda text: text if text is None else mask(text))]

TradeStatus = Literal["enqueued", "cooldown", "not_requested"]
# The statuses a stake_actions row can hold: decided without an extrinsic, or an extrinsic's
# (`included`: in a finalized block, outcome not yet read).
UnsubmittedStatus = Literal["skipped", "rejected", "dry_run"]
ExtrinsicStatus = Literal["submitting", "unknown", "included", "succeeded", "failed"]
StakeStatus = Literal[UnsubmittedStatus, ExtrinsicStatus]


# The trade part of a dividends answer (built by gateway.trades.presenter).
class TradeFields(BaseModel):
    stake_tx_triggered: bool = Field(
        description="True only when this request enqueued a new trade.",
    )
    trade_id: str | None = Field(
        None, description="The enqueued trade, or the one still inside its cooldown."
    )
    trade_status: TradeStatus = "not_requested"
    trade_detail: str | None = Field(None, description="Why a trade was or was not enqueued.")


class TweetsOut(BaseModel):
    source: str
    query: str
    count: int
    tweets: list[Tweet]
    error: Recorded
    fetched_at: datetime


class SentimentOut(BaseModel):
    score: int | None
    backend: str
    model: str | None
    reason: Recorded
    fallback_reason: Recorded
    scored_at: datetime


class StakeActionOut(BaseModel):
    id: int
    trade_id: str
    netuid: int
    hotkey: str
    coldkey: str | None
    direction: str
    status: str
    reason: Recorded
    score: int | None
    amount_tao: Decimal | None
    amount_alpha: Decimal | None
    success: bool | None
    message: Recorded
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
    reason: Recorded
    requested_by: str | None
    request_id: str | None
    replay_of: str | None
    created_at: datetime
    updated_at: datetime


class TradeOut(TradeSummary):
    tweets: TweetsOut | None = None
    sentiment: SentimentOut | None = None
    stake_action: StakeActionOut | None = None


class TradePage(BaseModel):
    items: list[TradeSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class StakeActionPage(BaseModel):
    items: list[StakeActionOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class TradeRequest(BaseModel):
    netuid: int = Field(ge=0, le=65535, description="Subnet id.", examples=[18])
    hotkey: str = Field(
        description=f"Hotkey. {SS58_DESCRIPTION}", examples=[SS58_EXAMPLE], **SS58_CONSTRAINTS
    )

    @field_validator("netuid", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        """What JSON Schema calls an integer (18 or 18.0), not `false` or `"18"`, which
        pydantic's lax mode would read as 0 and 18."""
        if isinstance(value, bool | str):
            raise ValueError("must be a JSON integer")
        return value


class TradeTriggered(BaseModel):
    trade_id: str = Field(description="The enqueued trade, or the one still inside its cooldown.")
    stake_tx_triggered: bool = Field(description="True only when this request enqueued a trade.")
    trade_status: TradeStatus
    trade_detail: str
