from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PlainSerializer

# A decimal amount written out in full ("0.000000007", never "7E-9"), nine places.
Amount = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str)]


class PositionAction(BaseModel):
    """One stored stake action of the position."""

    trade_id: str
    direction: str = Field(description="`add`, `remove` or `none`.")
    status: str = Field(description="The action's status (`succeeded` moved stake on chain).")
    reason: str | None
    amount_tao: Amount | None = Field(
        description="TAO sent (add), or the TAO value the unstake was sized for (remove)."
    )
    amount_alpha: Amount | None = Field(description="Alpha unstaked (remove).")
    extrinsic_hash: str | None
    block: int | None
    fee_rao: int | None
    created_at: datetime
    chain_stake_before_alpha: Amount | None = Field(
        description="The coldkey's stake on (hotkey, netuid) read from the chain just before "
        "this action was submitted (alpha; TAO on the root subnet)."
    )


class HistoryPoint(PositionAction):
    net_staked_tao_after: Amount = Field(
        description="`net_staked_tao` of the position right after this action."
    )


class ChainStake(BaseModel):
    coldkey: str
    stake_alpha: Amount = Field(description="Alpha held now (TAO on the root subnet).")
    stake_rao: int


class PositionOut(BaseModel):
    """The stake on one hotkey of one subnet: what the records say this service moved, and
    what the chain says the acting coldkeys hold now."""

    netuid: int
    hotkey: str
    actions: int = Field(description="Stake actions recorded, every status.")
    succeeded: int = Field(description="Of which succeeded on chain (moved stake).")
    tao_staked: Amount = Field(description="TAO sent by succeeded adds (from records).")
    alpha_unstaked: Amount = Field(description="Alpha removed by succeeded removes (records).")
    tao_unstaked_at_decision: Amount = Field(
        description="The TAO value succeeded removes were sized for, at decision time."
    )
    net_staked_tao: Amount = Field(
        description="`tao_staked` − `tao_unstaked_at_decision`: TAO moved into the position by "
        "this service's records, not its current value (see `chain_stake_alpha`)."
    )
    fees_rao: int = Field(description="Extrinsic fees recorded for the position's actions.")
    coldkeys: list[str] = Field(description="Coldkeys that acted on the position.")
    last_action: PositionAction = Field(description="The latest action, whatever its status.")
    history: list[HistoryPoint] = Field(
        description="The latest succeeded actions, newest first (`history` of them)."
    )
    chain_stake_alpha: Amount | None = Field(
        description="Stake the position's coldkeys hold on (hotkey, netuid) now, read from the "
        "chain (alpha; TAO on the root subnet). It is the coldkeys' whole stake there, whoever "
        "asked for the trades; null when the chain was not read (see `chain`)."
    )
    chain_stakes: list[ChainStake] = Field(description="The same, per coldkey.")


ChainReadStatus = Literal[
    "ok", "not_requested", "no_coldkey", "unsupported", "too_many_coldkeys", "error"
]


class ChainRead(BaseModel):
    """Whether the current stake was read from the chain for this page."""

    status: ChainReadStatus
    error_code: str | None = Field(
        None, description="With `error`: `chain_unavailable`, `chain_timeout`, …"
    )
    message: str | None = Field(None, description="Why the stake was not read.")
    block: int | None = Field(None, description="The block the stakes were read at.")


class PositionPage(BaseModel):
    positions: list[PositionOut] = Field(description="Most recently active first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")
    chain: ChainRead
