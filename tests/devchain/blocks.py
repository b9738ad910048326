"""The node's chain: genesis, sealing, lookup by number or hash, and state pruning.

Sealing is the one place extrinsics are executed: the head's state is copied, each
extrinsic applied by `SubtensorLogic`, `System.Events` written, and the new block
announced. Each block keeps its own state snapshot so a read pinned to a hash sees that
block; only the last `keep_states` snapshots are kept (older blocks still serve their
bodies, their state reads fail as on a pruned, non-archive node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.devchain.codec import DecodedExtrinsic, blake2_256
from tests.devchain.jsonrpc import RpcError
from tests.devchain.logic import Applied, DispatchFailed, SubtensorLogic
from tests.devchain.state import Block, WorldState

# The "no such block" / "pruned" messages of a real node (the SDK parses the latter).
UNKNOWN_BLOCK = "Client error: UnknownBlock: Header was not found in the database: {}"
DISCARDED = "Client error: Api called for an unknown Block: State already discarded for {}"


class BlockStore:
    """Every block of one node (instant seal, instant finality, no forks)."""

    def __init__(
        self,
        logic: SubtensorLogic,
        *,
        salt: bytes,
        keep_states: int,
        on_sealed: Callable[[Block], None],
    ) -> None:
        self.logic = logic
        self.keep_states = keep_states
        self.applied: list[Applied] = []
        """Every executed extrinsic, in order (tests inspect it)."""
        self._salt = salt
        self._on_sealed = on_sealed
        genesis_state = WorldState()
        logic.write_events(genesis_state, [])
        genesis = Block(
            number=0,
            hash="0x" + blake2_256(b"devchain-genesis" + salt).hex(),
            parent_hash="0x" + "00" * 32,
            extrinsics=[],
            state=genesis_state,
        )
        self.blocks: list[Block] = [genesis]
        self.by_hash: dict[str, Block] = {genesis.hash: genesis}

    @property
    def genesis(self) -> Block:
        return self.blocks[0]

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    @property
    def head_state(self) -> WorldState:
        state = self.head.state
        assert state is not None
        return state

    def block(self, ref: str | int) -> Block:
        if isinstance(ref, int):
            return self.blocks[ref]
        return self.by_hash[ref]

    def at(self, block_hash: Any) -> Block:
        """The block an RPC call pins (None: the head), with its state still kept."""
        if block_hash is None:
            return self.head
        block = self.by_hash.get(str(block_hash))
        if block is None:
            raise RpcError(4003, UNKNOWN_BLOCK.format(block_hash))
        if block.state is None:
            raise RpcError(4003, DISCARDED.format(block_hash))
        return block

    def seal(self, extrinsics: list[DecodedExtrinsic], forced: DispatchFailed | None) -> Block:
        """Apply `extrinsics` (the first fails with `forced` if given) in a new head block."""
        parent = self.head
        assert parent.state is not None
        state = parent.state.copy()
        number = parent.number + 1
        records: list[dict[str, Any]] = []
        for index, ext in enumerate(extrinsics):
            applied = self.logic.apply(state, ext, index, number, forced if index == 0 else None)
            records.extend(applied.events)
            self.applied.append(applied)
        self.logic.write_events(state, records)
        seed = self._salt + bytes.fromhex(parent.hash[2:]) + number.to_bytes(8, "little")
        seed += b"".join(ext.raw for ext in extrinsics)
        block = Block(
            number=number,
            hash="0x" + blake2_256(seed).hex(),
            parent_hash=parent.hash,
            extrinsics=["0x" + ext.raw.hex() for ext in extrinsics],
            state=state,
        )
        self.blocks.append(block)
        self.by_hash[block.hash] = block
        if len(self.blocks) > self.keep_states:
            self.blocks[-self.keep_states - 1].state = None
        self._on_sealed(block)
        return block
