"""Chain access. `SubtensorChain` is the only code that imports bittensor."""

from shared.chain.subtensor import SubtensorChain
from shared.chain.types import (
    STORAGE_UNITS,
    ChainClient,
    ChainStatus,
    DividendEntry,
    DividendSnapshot,
    DividendStorage,
    StakeEntry,
    StakeReader,
    StakeSnapshot,
)

__all__ = [
    "STORAGE_UNITS",
    "ChainClient",
    "ChainStatus",
    "DividendEntry",
    "DividendSnapshot",
    "DividendStorage",
    "StakeEntry",
    "StakeReader",
    "StakeSnapshot",
    "SubtensorChain",
]
