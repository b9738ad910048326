"""Protected stake calls signed here, sent here, and settled from the chain's own record.

The SDK's `add_stake` / `unstake` sign and send in one go, so the hash of what they
sent is only known after the answer comes back — exactly when it may not. Here the
call (`add_stake_limit` / `remove_stake_limit`, the SDK's safe staking) is composed
and signed first, with the nonce of System.Account at the head block and a mortal era
anchored there; the stake stage stores hash, nonce and window, then `submit` sends it.
An outcome that did not come back is learned only by finding that hash in a block of
its window (`find_extrinsic`) and reading its ExtrinsicSuccess / ExtrinsicFailed event;
found without a readable one (state pruned, an error reply, events that do not decode) it
is reported as included with its outcome unknown, never as a success or failure.

Storage is read with `query_multi`, which raises on a JSON-RPC error reply; the SDK's
`query` would decode that reply as the storage default (free balance 0, nonce 0, no
events). An error reply to any read before signing (System.Account, the runtime calls for
stake and price) is `ChainUnavailable`: nothing was sent, and the stake stage waits it out
in place instead of spending the trade's deliveries.

MEV protection is off: its encrypted path needs a revealing validator set, which
neither the test network's public nodes nor a local node provide.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.chain.staking_types import (
    ERA_PERIOD_BLOCKS,
    AccountState,
    ExtrinsicSearch,
    Inclusion,
    SignedStake,
    StakeClient,
    StakeOrder,
    StakeOutcome,
)
from shared.chain.subtensor import SubtensorChain
from shared.chain.wallet import WalletProblem, load_wallet
from shared.errors import ChainError, ChainUnavailable
from shared.settings import Settings

__all__ = ["SubtensorStaker", "WalletProblem", "open_stake_client", "pool_verdict"]

T = TypeVar("T")

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


class _Unreadable(Exception):
    """The extrinsic is in the block, but its outcome cannot be read there."""

    def __init__(self, problem: str, *, transient: bool) -> None:
        super().__init__(problem)
        self.problem = problem
        self.transient = transient


def _pruned(error: BaseException) -> bool:
    """The node no longer keeps that block's state (a later read will not do better)."""
    from async_substrate_interface.errors import StateDiscardedError

    return isinstance(error, StateDiscardedError) or "State already discarded" in str(error)


async def _storage_value(
    substrate: Any, module: str, name: str, params: list[Any], block_hash: str
) -> Any:
    """One storage value at `block_hash`; an error reply raises.

    `substrate.query` decodes a JSON-RPC error answer as the storage default (a free
    balance of 0, nonce 0, no events); `query_multi` raises `SubstrateRequestException`
    instead. A key that is absent from storage still reads as its default."""
    key = await substrate.create_storage_key(module, name, params, block_hash=block_hash)
    pairs = await substrate.query_multi([key], block_hash=block_hash)
    if len(pairs) != 1:
        raise ChainUnavailable(f"{module}.{name}: the node answered {len(pairs)} values for 1 key")
    return _scalar(pairs[0][1])


async def _system_account(substrate: Any, coldkey: str, block_hash: str) -> dict[str, Any]:
    """System.Account of `coldkey`; an error reply is `ChainUnavailable` (waited out), never
    a zero balance or nonce."""
    from async_substrate_interface.errors import SubstrateRequestException

    try:
        value = await _storage_value(substrate, "System", "Account", [coldkey], block_hash)
    except SubstrateRequestException as exc:
        raise ChainUnavailable(f"System.Account unreadable: {exc}"[:300]) from exc
    # An absent account decodes as the storage default (nonce 0, free 0); None is no answer.
    if not isinstance(value, dict) or "nonce" not in value:
        raise ChainUnavailable("System.Account: unexpected value from the node")
    return value


def _error_replies_wait(
    op: str, fn: Callable[[Any], Awaitable[T]]
) -> Callable[[Any], Awaitable[T]]:
    """`fn` with an error reply from the node (`SubstrateRequestException`: a runtime call
    for stake or price, the head, a storage read) raised as `ChainUnavailable`, which the
    stake stage waits out in place, rather than as a bad response that spends a delivery.
    For reads made before anything is sent."""

    async def guarded(subtensor: Any) -> T:
        from async_substrate_interface.errors import SubstrateRequestException

        try:
            return await fn(subtensor)
        except SubstrateRequestException as exc:
            raise ChainUnavailable(f"{op}: error reply from the node: {exc}"[:300]) from exc

    return guarded


def _connection_lost(error: BaseException) -> bool:
    """A transport failure (as `SubtensorChain._translate` reads it), not an answer."""
    return (
        isinstance(error, ConnectionError | OSError) or "ConnectionClosed" in type(error).__name__
    )


async def _index_in_block(
    substrate: Any, block_hash: str, target: str, timeout_s: float
) -> int | None:
    """The index of the extrinsic with hash `target` in the block, or None."""
    reply = await asyncio.wait_for(substrate.rpc_request("chain_getBlock", [block_hash]), timeout_s)
    extrinsics = ((reply.get("result") or {}).get("block") or {}).get("extrinsics")
    if extrinsics is None:
        raise ChainUnavailable(f"block {block_hash} not served by the node")
    for index, raw in enumerate(extrinsics):
        if _hash_of(str(raw)) == target:
            return index
    return None


async def _failure(substrate: Any, block_hash: str, event: dict[str, Any]) -> tuple[str, str]:
    """(error name, message) of an ExtrinsicFailed event."""
    from async_substrate_interface.utils.receipt import (
        build_system_error_message,
        extract_failure_details,
        normalize_module_error,
    )

    details = extract_failure_details(event)
    error: Any = details["error_message"]
    dispatch_error = details["dispatch_error"]
    if error is None and dispatch_error is not None:
        module_error = normalize_module_error(dispatch_error)
        if module_error is not None:
            runtime = await substrate.init_runtime(block_hash=block_hash)
            found = runtime.metadata.get_module_error(
                module_index=module_error["module_index"],
                error_index=module_error["error_index"],
            )
            error = {"name": found.name, "docs": found.docs}
        else:
            error = build_system_error_message(dispatch_error)
    if not isinstance(error, dict):
        return "DispatchError", str(dispatch_error if error is None else error)
    name = str(error.get("name") or "DispatchError")
    docs = error.get("docs") or ""
    docs = " ".join(map(str, docs)) if isinstance(docs, list | tuple) else str(docs)
    return name, f"{name}: {docs}" if docs else name


async def _outcome_in_block(
    substrate: Any, block_hash: str, block: int, index: int, extrinsic_hash: str
) -> StakeOutcome:
    """The outcome from the extrinsic's own ExtrinsicSuccess / ExtrinsicFailed event.

    Raises `_Unreadable` when the block's events cannot be read or hold no such event
    for `index`: an outcome is never assumed from the absence of one."""
    from async_substrate_interface.errors import SubstrateRequestException
    from async_substrate_interface.utils.receipt import (
        extract_fallback_deposit_fee_amount,
        extract_total_fee_amount,
        is_extrinsic_failure_event,
        is_extrinsic_success_event,
    )

    try:
        events = await _storage_value(substrate, "System", "Events", [], block_hash)
    except SubstrateRequestException as exc:
        raise _Unreadable(
            f"events of block {block} unreadable: {exc}"[:300], transient=not _pruned(exc)
        ) from exc
    mine = [e for e in events or [] if isinstance(e, dict) and e.get("extrinsic_idx") == index]
    verdicts = [e for e in mine if is_extrinsic_success_event(e) or is_extrinsic_failure_event(e)]
    if not verdicts:
        raise _Unreadable(
            f"no ExtrinsicSuccess/ExtrinsicFailed event for extrinsic {index} among the "
            f"{len(events or [])} events of block {block}",
            transient=False,
        )
    fee, fee_event = extract_total_fee_amount(mine)
    if not fee_event:
        fee = sum(extract_fallback_deposit_fee_amount(e) for e in mine)
    failed = next((e for e in verdicts if is_extrinsic_failure_event(e)), None)
    error_name: str | None = None
    message = "Success"
    if failed is not None:
        error_name, message = await _failure(substrate, block_hash, failed)
    return StakeOutcome(
        success=failed is None,
        message=message,
        error_name=error_name,
        extrinsic_hash=extrinsic_hash,
        block_hash=block_hash,
        block=block,
        fee_rao=int(fee),
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
            account = await _system_account(subtensor.substrate, self._coldkey, block_hash)
            # Runtime calls (state_call): an error reply raises (see `_error_replies_wait`).
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

        return await self._chain.call("account", _error_replies_wait("account", read))

    async def sign(self, order: StakeOrder) -> SignedStake:
        async def build(subtensor: Any) -> SignedStake:
            substrate = subtensor.substrate
            head_hash = str(await substrate.get_chain_head())
            head = int(await substrate.get_block_number(head_hash))
            # System.Account at the pinned head, not the SDK's per-process nonce cache
            # (which counts pool transactions and increments on its own); an error reply
            # raises rather than signing with nonce 0.
            account = await _system_account(substrate, self._coldkey, head_hash)
            nonce = int(account.get("nonce", 0))
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

        return await self._chain.call("sign", _error_replies_wait("sign", build))

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
            substrate = subtensor.substrate
            block_hash = str(receipt.block_hash)
            target = signed.extrinsic_hash.lower()
            index = await _index_in_block(substrate, block_hash, target, self._call_timeout)
            if index is None:
                raise ChainUnavailable(f"finalized block {block_hash} does not hold the extrinsic")
            block = receipt.block_number
            if block is None:
                block = await substrate.get_block_number(block_hash)
            try:
                return await _outcome_in_block(substrate, block_hash, int(block), index, target)
            except _Unreadable as exc:
                # Included, outcome unreadable: left to settlement, which reads it again.
                raise ChainUnavailable(f"included in block {block}; {exc.problem}") from exc

        return await self._chain.call("submit", send, timeout_s=self._submit_timeout)

    async def find_extrinsic(
        self, extrinsic_hash: str, from_block: int, to_block: int
    ) -> ExtrinsicSearch:
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
                    block_hash = str(
                        await asyncio.wait_for(substrate.get_block_hash(number), self._call_timeout)
                    )
                    index = await _index_in_block(substrate, block_hash, target, self._call_timeout)
                return None if index is None else (number, block_hash, index)

            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(look(n)) for n in range(from_block, last + 1)]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            found = next((t.result() for t in tasks if t.result() is not None), None)
            if found is None:
                return ExtrinsicSearch(None, last, head)
            number, block_hash, index = found
            try:
                outcome = await asyncio.wait_for(
                    _outcome_in_block(substrate, block_hash, number, index, target),
                    self._call_timeout,
                )
            except _Unreadable as exc:
                included = Inclusion(number, block_hash, index, exc.problem, exc.transient)
                return ExtrinsicSearch(None, last, head, included)
            except (TimeoutError, ChainError):
                raise
            except Exception as exc:
                if _connection_lost(exc):
                    raise
                # Found, and its events answered but cannot be decoded (or their error
                # cannot be): unreadable. Transient, so settlement tries a few sweeps before
                # recording it `included` instead of keeping the lane closed for ever.
                problem = f"events of block {number} undecodable: {type(exc).__name__}: {exc}"
                included = Inclusion(number, block_hash, index, problem[:300], transient=True)
                return ExtrinsicSearch(None, last, head, included)
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
