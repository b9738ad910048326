"""A fake behind the project's ChainClient interface: scripted data, call counts, stalls."""

from __future__ import annotations

import asyncio
from collections import Counter

from shared.chain import ChainStatus, DividendEntry, DividendSnapshot, DividendStorage
from shared.errors import ChainError

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
DEFAULT_HOTKEY = "5FFApaS75bv5pJHfAp2FVLBj9ZaXuFDjEypsaBNc1wCfe52v"


class FakeChain:
    def __init__(
        self,
        data: dict[int, dict[str, int]] | None = None,
        *,
        storage: DividendStorage = "TaoDividendsPerSubnet",
        block: int = 1000,
        delay_s: float = 0.0,
    ) -> None:
        self.data = (
            data
            if data is not None
            else {
                0: {ALICE: 11},
                3: {ALICE: 123_456_789, BOB: 7},
                18: {DEFAULT_HOTKEY: 5_000_000_000},
            }
        )
        self.storage: DividendStorage = storage
        self.block = block
        self.delay_s = delay_s
        self.calls: Counter[str] = Counter()
        self.stalled = False
        self.error: ChainError | None = None

    @property
    def reads(self) -> int:
        return sum(v for k, v in self.calls.items() if k != "status")

    async def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if self.stalled:
            await asyncio.Event().wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error

    def _snapshot(self, entries: list[DividendEntry]) -> DividendSnapshot:
        return DividendSnapshot(entries, self.storage, self.block, f"0x{self.block:064x}")

    async def dividend(self, netuid: int, hotkey: str) -> DividendSnapshot:
        await self._enter("dividend")
        return self._snapshot(
            [DividendEntry(netuid, hotkey, self.data.get(netuid, {}).get(hotkey, 0))]
        )

    async def subnet_dividends(self, netuid: int) -> DividendSnapshot:
        await self._enter("subnet_dividends")
        rows = self.data.get(netuid, {})
        return self._snapshot([DividendEntry(netuid, h, d) for h, d in sorted(rows.items())])

    async def all_dividends(self) -> DividendSnapshot:
        await self._enter("all_dividends")
        return self._snapshot(
            [
                DividendEntry(n, h, d)
                for n in sorted(self.data)
                for h, d in sorted(self.data[n].items())
            ]
        )

    async def status(self) -> ChainStatus:
        self.calls["status"] += 1
        return ChainStatus(
            not self.stalled and self.error is None, "fake", "fake://", self.block, self.storage
        )
