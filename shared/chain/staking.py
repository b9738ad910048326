"""Stake operations through `AsyncSubtensor.add_stake` / `unstake` (bittensor 10.5).

`unstake` takes alpha of the subnet, not TAO: the stake stage converts before
calling. MEV protection is off: its encrypted path needs a revealing validator
set, which neither the test network's public nodes nor a local node provide.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from shared.chain.staking_types import AccountState, StakeClient, StakeOutcome
from shared.chain.subtensor import SubtensorChain
from shared.chain.wallet import WalletProblem, load_wallet
from shared.errors import ChainUnavailable
from shared.settings import Settings

__all__ = ["SubtensorStaker", "WalletProblem", "open_stake_client"]

_MODULE_ERROR = re.compile(r"`(\w+)\(Module\)`")
# JSON-RPC 1010 (invalid transaction) / 1011 (unknown transaction): the pool's verdict.
_POOL_VERDICT = re.compile(r"'code': 101[01]\b")


def _scalar(value: Any) -> Any:
    return getattr(value, "value", value)


def _rao(balance: Any) -> int:
    return int(getattr(balance, "rao", balance) or 0)


def outcome_of(response: Any) -> StakeOutcome:
    """Flatten bittensor's ExtrinsicResponse.

    The SDK turns *any* exception into `success=False`, including a connection lost
    after the extrinsic was sent. Only a dispatch (module) error is a known failure;
    anything else is an unknown outcome, raised so the stake stage reconciles it.
    """
    message = str(getattr(response, "message", "") or "")
    error = getattr(response, "error", None)
    error_name = None
    if not response.success:
        match = _MODULE_ERROR.search(message)
        if match is not None:
            error_name = match.group(1)
        elif _POOL_VERDICT.search(str(error)):
            # Refused by the transaction pool (invalid / unknown transaction): never
            # included, nonce untouched, so a known failure rather than an unknown outcome.
            error_name = "PoolRejected"
        else:
            raise ChainUnavailable(
                f"extrinsic outcome unknown ({type(error).__name__ if error else 'no error'})"
            )
    receipt = getattr(response, "extrinsic_receipt", None)
    # The fee the chain charged for the extrinsic (transaction_tao_fee is the AMM's swap fee).
    fee = getattr(response, "extrinsic_fee", None)
    block = getattr(receipt, "block_number", None)
    return StakeOutcome(
        success=bool(response.success),
        message=message,
        error_name=error_name,
        extrinsic_hash=getattr(receipt, "extrinsic_hash", None),
        block_hash=getattr(receipt, "block_hash", None),
        block=int(block) if block is not None else None,
        fee_rao=_rao(fee) if fee is not None else None,
    )


async def _settle(subtensor: Any, response: Any) -> StakeOutcome:
    """`outcome_of`, plus what only the receipt knows: the fee charged (also when the call
    failed) and the block number (the SDK's receipt carries the block hash only)."""
    outcome = outcome_of(response)
    receipt = getattr(response, "extrinsic_receipt", None)
    if receipt is None:
        return outcome
    block = outcome.block
    if block is None:
        block = int(await subtensor.substrate.get_block_number(receipt.block_hash))
    fee = int(await receipt.total_fee_amount)
    return dataclasses.replace(outcome, fee_rao=fee, block=block)


class SubtensorStaker:
    """`StakeClient` for one unlocked wallet over the process's chain connection."""

    def __init__(self, chain: SubtensorChain, wallet: Any, *, submit_timeout_s: float) -> None:
        self._chain = chain
        self._wallet = wallet
        self._coldkey = str(wallet.coldkeypub.ss58_address)
        self._submit_timeout = submit_timeout_s

    @property
    def coldkey(self) -> str:
        return self._coldkey

    async def account(self, netuid: int, hotkey: str) -> AccountState:
        async def read(subtensor: Any) -> AccountState:
            block_hash = str(await subtensor.substrate.get_chain_head())
            block = int(await subtensor.substrate.get_block_number(block_hash))
            # The nonce comes from System.Account at the pinned block: the SDK's
            # `get_account_next_index` counts pool transactions and caches (and increments)
            # per process, which would make "nonce moved" mean nothing.
            info = await subtensor.substrate.query(
                "System", "Account", [self._coldkey], block_hash=block_hash
            )
            account = _scalar(info) or {}
            stake = await subtensor.get_stake(self._coldkey, hotkey, netuid, block_hash=block_hash)
            price = await subtensor.get_subnet_price(netuid, block_hash=block_hash)
            deposit = await subtensor.get_existential_deposit(block_hash=block_hash)
            return AccountState(
                coldkey=self._coldkey,
                free_rao=int(account.get("data", {}).get("free", 0)),
                stake_rao=_rao(stake),
                alpha_price_rao=_rao(price),
                nonce=int(account.get("nonce", 0)),
                block=block,
                existential_deposit_rao=_rao(deposit),
            )

        return await self._chain.call("account", read)

    async def add_stake(self, netuid: int, hotkey: str, amount_rao: int) -> StakeOutcome:
        from bittensor.utils.balance import Balance

        async def submit(subtensor: Any) -> StakeOutcome:
            # Sign with the chain's current nonce, not a per-process cached guess.
            subtensor.substrate.clear_nonce_cache_for_account(self._coldkey)
            response = await subtensor.add_stake(
                wallet=self._wallet,
                netuid=netuid,
                hotkey_ss58=hotkey,
                amount=Balance.from_rao(amount_rao),
                mev_protection=False,
                wait_for_inclusion=True,
                wait_for_finalization=True,
            )
            return await _settle(subtensor, response)

        return await self._chain.call("add_stake", submit, timeout_s=self._submit_timeout)

    async def unstake(self, netuid: int, hotkey: str, alpha_rao: int) -> StakeOutcome:
        from bittensor.utils.balance import Balance

        async def submit(subtensor: Any) -> StakeOutcome:
            # Sign with the chain's current nonce, not a per-process cached guess.
            subtensor.substrate.clear_nonce_cache_for_account(self._coldkey)
            response = await subtensor.unstake(
                wallet=self._wallet,
                netuid=netuid,
                hotkey_ss58=hotkey,
                amount=Balance.from_rao(alpha_rao, netuid=netuid),
                mev_protection=False,
                wait_for_inclusion=True,
                wait_for_finalization=True,
            )
            return await _settle(subtensor, response)

        return await self._chain.call("unstake", submit, timeout_s=self._submit_timeout)


async def open_stake_client(settings: Settings, chain: SubtensorChain) -> StakeClient:
    """The wallet's stake client; raises `WalletProblem` saying what is missing."""
    wallet = await asyncio.to_thread(load_wallet, settings)
    return SubtensorStaker(chain, wallet, submit_timeout_s=settings.stake_submit_timeout_s)
