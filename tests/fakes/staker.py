"""A fake behind the project's StakeClient interface that keeps the chain's bookkeeping:
balances, stakes, prices, nonces, blocks holding extrinsic hashes with their outcome,
mortality windows. Each submitted extrinsic that the fake "chain" accepts seals one block;
settlement can only learn an outcome by finding the hash in a block, as on the node."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.chain.staking_types import (
    ERA_PERIOD_BLOCKS,
    RAO_PER_TAO,
    AccountState,
    ChainNotConnected,
    ExtrinsicSearch,
    Inclusion,
    SignedStake,
    StakeOrder,
    StakeOutcome,
)
from shared.errors import ChainTimeout, ChainUnavailable

COLDKEY = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"
FEE_RAO = 1000


@dataclass(frozen=True, slots=True)
class Included:
    block: int
    extrinsic_hash: str
    outcome: StakeOutcome


class FakeStaker:
    def __init__(self, *, free_tao: float = 10.0, price_tao: float = 0.5) -> None:
        self.free_rao = int(free_tao * RAO_PER_TAO)
        self.stakes: dict[tuple[int, str], int] = {}
        self.prices: dict[int, int] = {}
        self.default_price_rao = int(price_tao * RAO_PER_TAO)
        self.nonce = 0
        self.block = 100
        self.era_period = ERA_PERIOD_BLOCKS
        self.extrinsics: list[tuple[str, int, str, int]] = []  # every submission attempt
        self.included: list[Included] = []  # what the "chain" holds, block by block
        self.signed: list[SignedStake] = []
        self.calls: Counter[str] = Counter()
        self.fail_next: str | None = None  # included, failing with this module error
        self.lose_next = False  # included, then the answer is lost (ChainTimeout)
        self.drop_next = False  # never reaches the chain, and the answer is lost
        self.move_price_next: tuple[int, int] | None = None  # (netuid, rao) before inclusion
        self.search_errors: dict[str, Exception] = {}  # hash -> raised by find_extrinsic
        # included, then its events cannot be read: submit's answer is lost (unknown) and
        # find_extrinsic finds the hash without an outcome; (problem, transient)
        self.unreadable_next: tuple[str, bool] | None = None
        self.unreadable: dict[str, tuple[str, bool]] = {}  # hash -> (problem, transient)
        self.not_connected_next = False  # submit finds no connection: nothing is sent
        self.sign_nonce_next: int | None = None  # the next sign uses this nonce (a bad read)
        self.on_sign: Callable[[SignedStake], Awaitable[None]] | None = None  # after signing
        self.delay_s = 0.0

    @property
    def coldkey(self) -> str:
        return COLDKEY

    @property
    def orders(self) -> list[StakeOrder]:
        return [s.order for s in self.signed]

    def price(self, netuid: int) -> int:
        return RAO_PER_TAO if netuid == 0 else self.prices.get(netuid, self.default_price_rao)

    def seal(self, blocks: int = 1) -> None:
        """Empty blocks go by (time passes on the fake chain)."""
        self.block += blocks

    async def account(self, netuid: int, hotkey: str) -> AccountState:
        self.calls["account"] += 1
        return AccountState(
            coldkey=COLDKEY,
            free_rao=self.free_rao,
            stake_rao=self.stakes.get((netuid, hotkey), 0),
            alpha_price_rao=self.price(netuid),
            nonce=self.nonce,
            block=self.block,
        )

    async def sign(self, order: StakeOrder) -> SignedStake:
        self.calls["sign"] += 1
        nonce = self.nonce if self.sign_nonce_next is None else self.sign_nonce_next
        self.sign_nonce_next = None
        digest = hashlib.blake2b(
            f"{COLDKEY}/{nonce}/{self.block}/{order}/{len(self.signed)}".encode(), digest_size=32
        ).hexdigest()
        signed = SignedStake(
            order=order,
            extrinsic_hash=f"0x{digest}",
            nonce=nonce,
            era_start_block=self.block,
            era_end_block=self.block + self.era_period,
        )
        self.signed.append(signed)
        if self.on_sign is not None:
            await self.on_sign(signed)
        return signed

    async def submit(self, signed: SignedStake) -> StakeOutcome:
        self.calls["submit"] += 1
        if self.not_connected_next:  # as SubtensorChain.call: raised before anything is sent
            self.not_connected_next = False
            raise ChainNotConnected("chain ws://fake is not connected (ConnectionRefusedError)")
        order = signed.order
        self.extrinsics.append((order.direction, order.netuid, order.hotkey, order.amount_rao))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.drop_next:
            self.drop_next = False
            raise ChainUnavailable("chain connection lost during submit")
        if signed.nonce > self.nonce:
            return StakeOutcome(False, "refused by the pool: future", "PoolRejected")
        if signed.nonce < self.nonce or not (
            signed.era_start_block <= self.block < signed.era_end_block
        ):
            raise ChainUnavailable("extrinsic outcome unknown (outdated)")
        if self.move_price_next is not None:
            netuid, price = self.move_price_next
            self.prices[netuid] = price
            self.move_price_next = None
        outcome = self._apply(signed)
        if self.unreadable_next is not None:
            self.unreadable[signed.extrinsic_hash] = self.unreadable_next
            self.unreadable_next = None
        if signed.extrinsic_hash in self.unreadable:
            problem, _ = self.unreadable[signed.extrinsic_hash]
            raise ChainUnavailable(f"included in block {outcome.block}; {problem}")
        if self.lose_next:
            self.lose_next = False
            raise ChainTimeout("chain did not answer submit within 1s")
        return outcome

    def _apply(self, signed: SignedStake) -> StakeOutcome:
        order = signed.order
        self.nonce += 1
        self.block += 1
        self.free_rao -= FEE_RAO
        price = self.price(order.netuid)
        error = self.fail_next
        self.fail_next = None
        beyond = (
            price > order.limit_price_rao
            if order.direction == "add"
            else price < order.limit_price_rao
        )
        if error is None and beyond and order.netuid != 0 and not order.allow_partial:
            error = "SlippageTooHigh"
        key = (order.netuid, order.hotkey)
        if error is None:
            if order.direction == "add":
                self.free_rao -= order.amount_rao
                self.stakes[key] = self.stakes.get(key, 0) + order.amount_rao * RAO_PER_TAO // price
            else:
                self.stakes[key] = self.stakes.get(key, 0) - order.amount_rao
                self.free_rao += order.amount_rao * price // RAO_PER_TAO
        outcome = StakeOutcome(
            success=error is None,
            message="Success" if error is None else f"{error}: failed",
            error_name=error,
            extrinsic_hash=signed.extrinsic_hash,
            block_hash=f"0x{self.block:064x}",
            block=self.block,
            fee_rao=FEE_RAO,
        )
        self.included.append(Included(self.block, signed.extrinsic_hash, outcome))
        return outcome

    async def find_extrinsic(
        self, extrinsic_hash: str, from_block: int, to_block: int
    ) -> ExtrinsicSearch:
        self.calls["find_extrinsic"] += 1
        if extrinsic_hash in self.search_errors:
            raise self.search_errors[extrinsic_hash]
        last = min(to_block, self.block)
        for item in self.included:
            if item.extrinsic_hash == extrinsic_hash and from_block <= item.block <= last:
                if extrinsic_hash in self.unreadable:
                    problem, transient = self.unreadable[extrinsic_hash]
                    found = Inclusion(item.block, f"0x{item.block:064x}", 0, problem, transient)
                    return ExtrinsicSearch(None, last, self.block, found)
                return ExtrinsicSearch(item.outcome, last, self.block)
        return ExtrinsicSearch(None, max(last, from_block - 1), self.block)
