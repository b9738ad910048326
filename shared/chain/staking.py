"""Protected stake calls signed here, sent here, and settled from the chain's own record.

The SDK's `add_stake` / `unstake` sign and send in one go, so the hash of what they
sent is only known after the answer comes back — exactly when it may not. Here the
call (`add_stake_limit` / `remove_stake_limit`, the SDK's safe staking) is composed
and signed first, with the nonce of System.Account at the head block and a mortal era
anchored there; the stake stage stores hash, nonce and window, then `submit` sends it.
An outcome that did not come back is learned only by finding that hash in a block of
its window (`find_extrinsic`) and reading its ExtrinsicSuccess / ExtrinsicFailed event.

MEV protection is off: its encrypted path needs a revealing validator set, which
neither the test network's public nodes nor a local node provide.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from shared.chain.staking_types import (
    ERA_PERIOD_BLOCKS,
    AccountState,
    ExtrinsicSearch,
    SignedStake,
    StakeClient,
    StakeOrder,
    StakeOutcome,
)
from shared.chain.subtensor import SubtensorChain
from shared.chain.wallet import WalletProblem, load_wallet
from shared.errors import ChainUnavailable
from shared.settings import Settings

__all__ = ["SubtensorStaker", "WalletProblem", "open_stake_client", "pool_verdict"]

PALLET = "SubtensorModule"
# JSON-RPC 1010 (invalid transaction) / 1011 (unknown transaction): the pool's verdict.
_POOL_VERDICT = re.compile(r"'code': 101[01]\b")
# "Outdated" means the nonce is spent, possibly by this very extrinsic: the SDK resends a
# request after a reconnect, and the resend of an included extrinsic is "outdated".
_OWN_NONCE_USED = re.compile(r"outdated|stale|already imported", re.IGNORECASE)
_CUSTOM_ERROR = re.compile(r"Custom error: (\d+)")
# Subtensor's CustomTransactionError codes, as its transaction extension reports them.
_CUSTOM_ERRORS = {8: "SlippageTooHigh"}
SCAN_CONCURRENCY = 8
MAX_SCAN_BLOCKS = 256  # one search never looks at more blocks than this


def _scalar(value: Any) -> Any:
    return getattr(value, "value", value)


def _rao(balance: Any) -> int:
    return int(getattr(balance, "rao", balance) or 0)


def _hash_of(raw_hex: str) -> str:
    """An extrinsic's hash: blake2-256 of its encoding (length prefix included)."""
    raw = bytes.fromhex(raw_hex.removeprefix("0x"))
    return "0x" + hashlib.blake2b(raw, digest_size=32).hexdigest()


def pool_verdict(error: object) -> str | None:
    """The error name of a transaction-pool refusal (never included, nonce unused), or
    None when the error says nothing certain about the extrinsic's fate."""
    text = str(error)
    if not _POOL_VERDICT.search(text) or _OWN_NONCE_USED.search(text):
        return None
    custom = _CUSTOM_ERROR.search(text)
    if custom is not None:
        return _CUSTOM_ERRORS.get(int(custom.group(1)), f"CustomError{custom.group(1)}")
    return "PoolRejected"


async def _receipt_outcome(substrate: Any, receipt: Any, extrinsic_hash: str) -> StakeOutcome:
    """The outcome from the extrinsic's own events in its block."""
    success = bool(await receipt.is_success)
    fee = int(await receipt.total_fee_amount)
    block = receipt.block_number
    if block is None:
        block = await substrate.get_block_number(receipt.block_hash)
    error_name: str | None = None
    message = "Success"
    if not success:
        error = await receipt.error_message
        if isinstance(error, dict):
            error_name = str(error.get("name") or "DispatchError")
            docs = error.get("docs") or ""
            docs = " ".join(map(str, docs)) if isinstance(docs, list | tuple) else str(docs)
            message = f"{error_name}: {docs}" if docs else error_name
        else:
            error_name, message = "DispatchError", str(error)
    return StakeOutcome(
        success=success,
        message=message,
        error_name=error_name,
        extrinsic_hash=extrinsic_hash,
        block_hash=str(receipt.block_hash),
        block=int(block),
        fee_rao=fee,
    )


class SubtensorStaker:
    """`StakeClient` for one unlocked wallet over the process's chain connection."""

    def __init__(
        self,
        chain: SubtensorChain,
        wallet: Any,
        *,
        submit_timeout_s: float,
        call_timeout_s: float = 10.0,
        era_period: int = ERA_PERIOD_BLOCKS,
    ) -> None:
        self._chain = chain
        self._wallet = wallet
        self._coldkey = str(wallet.coldkeypub.ss58_address)
        self._submit_timeout = submit_timeout_s
        self._call_timeout = call_timeout_s
        self._era_period = era_period

    @property
    def coldkey(self) -> str:
        return self._coldkey

    async def account(self, netuid: int, hotkey: str) -> AccountState:
        async def read(subtensor: Any) -> AccountState:
            block_hash = str(await subtensor.substrate.get_chain_head())
            block = int(await subtensor.substrate.get_block_number(block_hash))
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

    async def sign(self, order: StakeOrder) -> SignedStake:
        async def build(subtensor: Any) -> SignedStake:
            substrate = subtensor.substrate
            head_hash = str(await substrate.get_chain_head())
            head = int(await substrate.get_block_number(head_hash))
            # System.Account at the pinned head, not the SDK's per-process nonce cache
            # (which counts pool transactions and increments on its own).
            info = await substrate.query("System", "Account", [self._coldkey], block_hash=head_hash)
            nonce = int((_scalar(info) or {}).get("nonce", 0))
            amount_arg = "amount_staked" if order.direction == "add" else "amount_unstaked"
            call = await substrate.compose_call(
                call_module=PALLET,
                call_function="add_stake_limit"
                if order.direction == "add"
                else "remove_stake_limit",
                call_params={
                    "hotkey": order.hotkey,
                    "netuid": order.netuid,
                    amount_arg: order.amount_rao,
                    "limit_price": order.limit_price_rao,
                    "allow_partial": order.allow_partial,
                },
            )
            era = {"period": self._era_period, "current": head}
            extrinsic = await substrate.create_signed_extrinsic(
                call=call, keypair=self._wallet.coldkey, era=dict(era), nonce=nonce
            )
            runtime = await substrate.init_runtime()
            era_obj = runtime.runtime_config.create_scale_object("Era")
            era_obj.encode(era)
            return SignedStake(
                order=order,
                extrinsic_hash="0x" + bytes(extrinsic.extrinsic_hash).hex(),
                nonce=nonce,
                era_start_block=int(era_obj.birth(head)),
                era_end_block=int(era_obj.death(head)),
                payload=extrinsic,
            )

        return await self._chain.call("sign", build)

    async def submit(self, signed: SignedStake) -> StakeOutcome:
        from async_substrate_interface.errors import SubstrateRequestException

        async def send(subtensor: Any) -> StakeOutcome:
            try:
                receipt = await subtensor.substrate.submit_extrinsic(
                    signed.payload, wait_for_inclusion=True, wait_for_finalization=True
                )
            except SubstrateRequestException as exc:
                verdict = pool_verdict(exc)
                if verdict is None:
                    # Dropped, usurped, or a reply we cannot read: it may still be included.
                    raise ChainUnavailable(
                        f"extrinsic outcome unknown ({type(exc).__name__})"
                    ) from exc
                return StakeOutcome(
                    success=False,
                    message=f"refused by the transaction pool: {exc}"[:500],
                    error_name=verdict,
                    extrinsic_hash=signed.extrinsic_hash,
                )
            return await _receipt_outcome(subtensor.substrate, receipt, signed.extrinsic_hash)

        return await self._chain.call("submit", send, timeout_s=self._submit_timeout)

    async def find_extrinsic(
        self, extrinsic_hash: str, from_block: int, to_block: int
    ) -> ExtrinsicSearch:
        from async_substrate_interface.async_substrate import AsyncExtrinsicReceipt

        target = extrinsic_hash.lower()

        async def search(subtensor: Any) -> ExtrinsicSearch:
            substrate = subtensor.substrate
            head_hash = await asyncio.wait_for(
                substrate.get_chain_finalised_head(), self._call_timeout
            )
            head = int(
                await asyncio.wait_for(substrate.get_block_number(head_hash), self._call_timeout)
            )
            last = min(to_block, head, from_block + MAX_SCAN_BLOCKS - 1)
            if last < from_block:
                return ExtrinsicSearch(None, from_block - 1, head)
            limit = asyncio.Semaphore(SCAN_CONCURRENCY)

            async def look(number: int) -> tuple[int, str, int] | None:
                async with limit:
                    block_hash = await asyncio.wait_for(
                        substrate.get_block_hash(number), self._call_timeout
                    )
                    reply = await asyncio.wait_for(
                        substrate.rpc_request("chain_getBlock", [block_hash]), self._call_timeout
                    )
                extrinsics = ((reply.get("result") or {}).get("block") or {}).get("extrinsics")
                if extrinsics is None:
                    raise ChainUnavailable(f"block {number} not served by the node")
                for index, raw in enumerate(extrinsics):
                    if _hash_of(str(raw)) == target:
                        return number, str(block_hash), index
                return None

            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(look(n)) for n in range(from_block, last + 1)]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            found = next((t.result() for t in tasks if t.result() is not None), None)
            if found is None:
                return ExtrinsicSearch(None, last, head)
            number, block_hash, index = found
            receipt = AsyncExtrinsicReceipt(
                substrate=substrate,
                extrinsic_hash=target,
                block_hash=block_hash,
                block_number=number,
                extrinsic_idx=index,
            )
            outcome = await asyncio.wait_for(
                _receipt_outcome(substrate, receipt, target), self._call_timeout
            )
            return ExtrinsicSearch(outcome, last, head)

        return await self._chain.call("find_extrinsic", search, timeout_s=self._submit_timeout)


async def open_stake_client(settings: Settings, chain: SubtensorChain) -> StakeClient:
    """The wallet's stake client; raises `WalletProblem` saying what is missing."""
    wallet = await asyncio.to_thread(load_wallet, settings)
    return SubtensorStaker(
        chain,
        wallet,
        submit_timeout_s=settings.stake_submit_timeout_s,
        call_timeout_s=settings.chain_timeout_s,
    )
