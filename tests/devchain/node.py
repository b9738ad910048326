"""`DevChain`: a websocket JSON-RPC 2.0 server that answers like a Subtensor node.

This module is the node's front: it wires the parts together, starts and stops them,
and holds the in-process API tests use (state setters on the head block, counters).
The parts, one job each:

- `transport`: the websocket server, JSON-RPC framing, batches, counting;
- `faults`: misbehaviour on demand (`FaultControls` is mixed in here) and where it acts;
- `control`: the `dev_*` control API for other processes;
- `rpc`: the Subtensor RPC namespaces (`system`, `chain`, `state`, `author`);
- `blocks`: the chain of blocks, sealing and state pruning;
- `logic` / `runtime_api`: what the runtime does, over `state` and `codec`.

See README.md for the API and what is modelled.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.tasks import cancel_and_wait
from tests.devchain.blocks import BlockStore
from tests.devchain.codec import codec_for
from tests.devchain.control import ControlRpc
from tests.devchain.faults import FaultControls, Faults
from tests.devchain.jsonrpc import RpcError
from tests.devchain.logic import RAO, Applied, SubtensorLogic
from tests.devchain.rpc import subtensor_handlers
from tests.devchain.runtime_api import RuntimeApis
from tests.devchain.state import Block, WorldState
from tests.devchain.transport import Transport, free_port

__all__ = ["DEFAULT_FEE_RAO", "DevChain", "RpcError", "free_port"]

logger = logging.getLogger("devchain")

DEFAULT_FEE_RAO = 50_000


class DevChain(FaultControls):
    """A simulated Subtensor node (one runtime, instant seal, instant finality).

    Use `async with DevChain(spec=393) as node:`; `node.url` is the websocket URL.
    State setters act on the head block; every accepted extrinsic seals a new block.
    """

    def __init__(
        self,
        spec: int = 393,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fixtures_dir: Path | None = None,
        existential_deposit: int | None = None,
        fee_rao: int = DEFAULT_FEE_RAO,
        block_time_s: float | None = None,
        finality_delay_s: float = 0.02,
        serve_v15: bool = True,
        verify_signatures: bool = True,
        keep_states: int = 256,
        genesis_salt: bytes | None = None,
    ) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self.codec = codec_for(
            spec, directory=fixtures_dir, existential_deposit=existential_deposit
        )
        self.logic = SubtensorLogic(self.codec, fee_rao=fee_rao)
        self.runtime_apis = RuntimeApis(self.logic)
        self.block_time_s = block_time_s
        self.finality_delay_s = finality_delay_s
        self.serve_v15 = serve_v15
        self.verify_signatures = verify_signatures
        self.metadata_hex = "0x" + self.codec.blobs.raw.hex()
        self.metadata_v15_hex = "0x" + self.codec.blobs.v15_option.hex()
        salt = genesis_salt if genesis_salt is not None else os.urandom(8)
        self.faults = Faults()
        handlers = {**subtensor_handlers(self), **ControlRpc(self).handlers()}
        self.transport = Transport(handlers, self.faults, salt=salt)
        self.blocks = BlockStore(
            self.logic,
            salt=salt,
            keep_states=max(keep_states, 2),
            on_sealed=self.transport.announce,
        )
        self._ticker: asyncio.Task[None] | None = None

    # ================================================================== lifecycle
    async def start(self) -> DevChain:
        self.port = await self.transport.start(self.host, self.port)
        if self.block_time_s:
            self._ticker = asyncio.create_task(self._tick(self.block_time_s), name="devchain-tick")
        logger.info("devchain spec %s listening on %s", self.spec, self.url)
        return self

    async def stop(self) -> None:
        if self._ticker is not None:
            await cancel_and_wait([self._ticker], timeout_s=5)
            self._ticker = None
        await self.transport.stop()

    async def __aenter__(self) -> DevChain:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.seal_block()

    # ================================================================== state API (head block)
    @property
    def head(self) -> Block:
        return self.blocks.head

    @property
    def _state(self) -> WorldState:
        return self.blocks.head_state

    @property
    def keep_states(self) -> int:
        return self.blocks.keep_states

    @property
    def applied(self) -> list[Applied]:
        """Every executed extrinsic: signer, call, args, success, error, fee, events."""
        return self.blocks.applied

    @property
    def dividend_storage(self) -> str:
        """The storage item SubtensorChain reads in auto mode on this runtime."""
        return self.logic.default_dividend_storage

    @property
    def existential_deposit(self) -> int:
        return int(self.codec.constant("Balances", "ExistentialDeposit"))

    def block(self, ref: str | int) -> Block:
        return self.blocks.block(ref)

    def add_subnet(self, netuid: int, *, price_tao: float = 1.0) -> None:
        self.logic.set_subnet(self._state, netuid, True, round(price_tao * RAO))

    def remove_subnet(self, netuid: int) -> None:
        self.logic.set_subnet(self._state, netuid, False, RAO)

    def subnets(self) -> list[int]:
        return self.logic.subnets(self._state)

    def set_price(self, netuid: int, price_tao: float) -> None:
        """Alpha price of a subnet in TAO (stored as rao per alpha)."""
        if netuid == 0:
            raise ValueError("root (netuid 0) has a fixed price of 1 TAO")
        if price_tao <= 0:
            raise ValueError("price must be positive")
        self._state.prices[netuid] = round(price_tao * RAO)

    def price(self, netuid: int) -> int:
        return self.logic.price(self._state, netuid)

    def set_dividend(
        self, netuid: int, hotkey: str, amount: int | None, *, storage: str | None = None
    ) -> None:
        """Store one dividend (None removes it) in `storage` (default: this runtime's item)."""
        self.logic.set_dividend(self._state, netuid, hotkey, amount, storage)

    def set_dividends(
        self, netuid: int, amounts: Mapping[str, int], *, storage: str | None = None
    ) -> None:
        for hotkey, amount in amounts.items():
            self.logic.set_dividend(self._state, netuid, hotkey, amount, storage)

    def dividend(self, netuid: int, hotkey: str, *, storage: str | None = None) -> int:
        return self.logic.dividend(self._state, netuid, hotkey, storage)

    def dividends(self, netuid: int, *, storage: str | None = None) -> dict[str, int]:
        return self.logic.dividends(self._state, netuid, storage)

    def set_balance(self, address: str, rao: int) -> None:
        self.logic.set_free(self._state, address, rao)

    def fund(self, address: str, tao: float) -> None:
        self.set_balance(address, self.balance(address) + round(tao * RAO))

    def balance(self, address: str) -> int:
        return self.logic.free(self._state, address)

    def nonce(self, address: str) -> int:
        return self.logic.nonce(self._state, address)

    def set_stake(self, coldkey: str, hotkey: str, netuid: int, alpha_rao: int) -> None:
        self.logic.set_stake(self._state, coldkey, hotkey, netuid, alpha_rao)

    def stake(self, coldkey: str, hotkey: str, netuid: int) -> int:
        return self.logic.stake(self._state, coldkey, hotkey, netuid)

    def events(self, block: str | int | None = None) -> list[dict[str, Any]]:
        found = self.head if block is None else self.block(block)
        if found.state is None:
            raise LookupError(f"state of block {found.number} was pruned")
        return self.logic.events(found.state)

    def seal_block(self) -> str:
        """Seal an empty block; returns its hash."""
        return self.blocks.seal([], None).hash

    # ================================================================== counters
    @property
    def rpc_counts(self) -> Counter[str]:
        """Requests per method (`dev_*` control calls are not counted)."""
        return self.transport.rpc_counts

    @property
    def state_call_counts(self) -> Counter[str]:
        """`state_call` requests per runtime API."""
        return self.transport.state_call_counts

    @property
    def total_rpc_calls(self) -> int:
        return sum(self.rpc_counts.values())

    def reset_counts(self) -> None:
        self.rpc_counts.clear()
        self.state_call_counts.clear()

    def counts(self) -> dict[str, Any]:
        return {
            "total": self.total_rpc_calls,
            "methods": dict(sorted(self.rpc_counts.items())),
            "state_call": dict(sorted(self.state_call_counts.items())),
        }

    @property
    def connections_total(self) -> int:
        return self.transport.connections_total

    @property
    def open_connections(self) -> int:
        return len(self.transport.connections)
