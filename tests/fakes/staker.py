"""A fake behind the project's StakeClient interface: balances, stakes, prices, nonces,
scripted failures; counts every extrinsic it receives."""

from __future__ import annotations

import asyncio
from collections import Counter

from shared.chain.staking_types import RAO_PER_TAO, AccountState, StakeOutcome
from shared.errors import ChainTimeout

COLDKEY = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"


class FakeStaker:
    def __init__(self, *, free_tao: float = 10.0, price_tao: float = 0.5) -> None:
        self.free_rao = int(free_tao * RAO_PER_TAO)
        self.stakes: dict[tuple[int, str], int] = {}
        self.prices: dict[int, int] = {}
        self.default_price_rao = int(price_tao * RAO_PER_TAO)
        self.nonce = 0
        self.block = 100
        self.extrinsics: list[tuple[str, int, str, int]] = []
        self.calls: Counter[str] = Counter()
        self.fail_next: str | None = None
        self.lose_next = False  # apply on chain, then raise ChainTimeout (outcome unknown)
        self.delay_s = 0.0

    @property
    def coldkey(self) -> str:
        return COLDKEY

    def price(self, netuid: int) -> int:
        return RAO_PER_TAO if netuid == 0 else self.prices.get(netuid, self.default_price_rao)

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

    async def _extrinsic(self, kind: str, netuid: int, hotkey: str, amount: int) -> StakeOutcome:
        self.extrinsics.append((kind, netuid, hotkey, amount))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.nonce += 1
        self.block += 1
        if self.fail_next is not None:
            name, self.fail_next = self.fail_next, None
            return StakeOutcome(
                False,
                f"Subtensor returned `{name}(Module)` error",
                name,
                f"0x{len(self.extrinsics):064x}",
                f"0x{self.block:064x}",
                self.block,
                1000,
            )
        key = (netuid, hotkey)
        if kind == "add":
            self.free_rao -= amount
            self.stakes[key] = self.stakes.get(key, 0) + amount * RAO_PER_TAO // self.price(netuid)
        else:
            self.stakes[key] = self.stakes.get(key, 0) - amount
            self.free_rao += amount * self.price(netuid) // RAO_PER_TAO
        if self.lose_next:
            self.lose_next = False
            raise ChainTimeout("chain did not answer add_stake within 1s")
        return StakeOutcome(
            True,
            "Success",
            None,
            f"0x{len(self.extrinsics):064x}",
            f"0x{self.block:064x}",
            self.block,
            1000,
        )

    async def add_stake(self, netuid: int, hotkey: str, amount_rao: int) -> StakeOutcome:
        return await self._extrinsic("add", netuid, hotkey, amount_rao)

    async def unstake(self, netuid: int, hotkey: str, alpha_rao: int) -> StakeOutcome:
        return await self._extrinsic("remove", netuid, hotkey, alpha_rao)
