"""What the gateway and pipeline know about the chain: plain data and a Protocol.

Nothing here imports bittensor, so tests can put a fake behind `ChainClient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

DividendStorage = Literal["TaoDividendsPerSubnet", "RootAlphaDividendsPerSubnet"]

# The unit each storage item is denominated in (both are u64 "rao" amounts).
STORAGE_UNITS: dict[str, str] = {
    "TaoDividendsPerSubnet": "tao_rao",
    "RootAlphaDividendsPerSubnet": "alpha_rao",
}


@dataclass(frozen=True, slots=True)
class DividendEntry:
    netuid: int
    hotkey: str
    dividend: int


@dataclass(frozen=True, slots=True)
class DividendSnapshot:
    """Dividends read at one block from one storage item."""

    entries: list[DividendEntry]
    storage: DividendStorage
    block: int
    block_hash: str

    @property
    def unit(self) -> str:
        return STORAGE_UNITS[self.storage]


@dataclass(frozen=True, slots=True)
class ChainStatus:
    connected: bool
    network: str
    endpoint: str
    block: int | None = None
    storage: DividendStorage | None = None
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class ChainClient(Protocol):
    """Dividend reads. Implementations raise only `shared.errors.ChainError` subclasses."""

    async def dividend(self, netuid: int, hotkey: str) -> DividendSnapshot:
        """One (netuid, hotkey) entry; a missing entry reads as 0."""
        ...

    async def subnet_dividends(self, netuid: int) -> DividendSnapshot:
        """Every hotkey with a stored dividend on `netuid`, in one map query."""
        ...

    async def all_dividends(self) -> DividendSnapshot:
        """Every subnet and its hotkeys, all at one pinned block."""
        ...

    async def status(self) -> ChainStatus: ...


@dataclass(frozen=True, slots=True)
class StakeEntry:
    """Alpha (rao) a coldkey holds on (hotkey, netuid); TAO rao on the root subnet."""

    coldkey: str
    hotkey: str
    netuid: int
    stake_rao: int


@dataclass(frozen=True, slots=True)
class StakeSnapshot:
    """Every non-zero stake of some coldkeys, read at one block."""

    entries: list[StakeEntry]
    block: int
    block_hash: str


@runtime_checkable
class StakeReader(Protocol):
    """An optional read a `ChainClient` may offer: the stake held by given coldkeys.

    Separate from `ChainClient` so that a client without it (a fake, a later SDK) still
    serves dividends; callers check `isinstance(chain, StakeReader)` and say when it is
    missing. Raises only `shared.errors.ChainError` subclasses.
    """

    async def coldkey_stakes(self, coldkeys: Sequence[str]) -> StakeSnapshot:
        """Every non-zero stake of `coldkeys`, all at one pinned block."""
        ...
