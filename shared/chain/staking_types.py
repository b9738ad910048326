"""Staking as the pipeline sees it: plain data and a Protocol (no bittensor import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

RAO_PER_TAO = 1_000_000_000


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the stake stage checks before submitting, read at one block."""

    coldkey: str
    free_rao: int  # free TAO balance of the coldkey, in rao
    stake_rao: int  # alpha (rao) staked by the coldkey on (hotkey, netuid)
    alpha_price_rao: int  # TAO rao per 1 alpha (10^9 alpha rao) on netuid; 10^9 on root
    nonce: int  # the coldkey's next nonce (account_nextIndex)
    block: int
    existential_deposit_rao: int = 500


@dataclass(frozen=True, slots=True)
class StakeOutcome:
    """The chain's answer to one extrinsic (bittensor's ExtrinsicResponse, flattened)."""

    success: bool
    message: str
    error_name: str | None = None
    extrinsic_hash: str | None = None
    block_hash: str | None = None
    block: int | None = None
    fee_rao: int | None = None


class StakeClient(Protocol):
    """Stake operations of one wallet. Raise only `shared.errors.ChainError` subclasses;
    a submission whose outcome cannot be known (timeout, lost connection after
    sending) raises `shared.errors.ChainTimeout` / `ChainUnavailable`."""

    @property
    def coldkey(self) -> str: ...

    async def account(self, netuid: int, hotkey: str) -> AccountState: ...

    async def add_stake(self, netuid: int, hotkey: str, amount_rao: int) -> StakeOutcome:
        """Stake `amount_rao` TAO rao from the coldkey's free balance."""
        ...

    async def unstake(self, netuid: int, hotkey: str, alpha_rao: int) -> StakeOutcome:
        """Unstake `alpha_rao` of the subnet's alpha (not TAO)."""
        ...
