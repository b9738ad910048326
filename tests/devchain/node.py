"""`DevChain`: a websocket JSON-RPC 2.0 server that answers like a Subtensor node.

Serves recorded finney metadata, storage reads at pinned blocks, paged map reads,
signed staking extrinsics with watch subscriptions and events, and the runtime-API
calls the SDK makes for staking. Tests drive its state and faults in-process;
other processes can use the `dev_*` RPC methods (see README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bittensor_wallet import Keypair
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from shared.tasks import cancel_and_wait
from tests.devchain.codec import DecodedExtrinsic, blake2_256, codec_for, to_public_key
from tests.devchain.logic import (
    RAO,
    Applied,
    DispatchFailed,
    Rejected,
    SubtensorLogic,
)
from tests.devchain.state import Block, WorldState

logger = logging.getLogger("devchain")

DEFAULT_FEE_RAO = 50_000
MAX_KEYS_PAGE = 1000
# The "no such block" / "pruned" messages of a real node (the SDK parses the latter).
UNKNOWN_BLOCK = "Client error: UnknownBlock: Header was not found in the database: {}"
DISCARDED = "Client error: Api called for an unknown Block: State already discarded for {}"

Params = list[Any]
After = Callable[[], Awaitable[None]]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(slots=True)
class _Reply:
    """A handler's result plus work to run after the response frame has been sent."""

    result: Any
    after: After | None = None


@dataclass(slots=True, eq=False)
class _Connection:
    ws: ServerConnection
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    extrinsic_subs: set[str] = field(default_factory=set)
    head_subs: dict[str, str] = field(default_factory=dict)  # id -> notification method

    async def send(self, payload: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(payload))

    async def notify(self, method: str, subscription: str, result: Any) -> None:
        params = {"subscription": subscription, "result": result}
        await self.send({"jsonrpc": "2.0", "method": method, "params": params})


@dataclass(slots=True)
class Faults:
    """Misbehaviour on demand. Method sets of None mean every method."""

    delay_s: float = 0.0
    delay_methods: frozenset[str] | None = None
    stalled: bool = False
    stall_methods: frozenset[str] | None = None
    drop_on: Counter[str] = field(default_factory=Counter)
    close_on: Counter[str] = field(default_factory=Counter)
    error_on: Counter[str] = field(default_factory=Counter)
    # storage item key prefix -> reads of it answered with a JSON-RPC error
    error_storage: Counter[bytes] = field(default_factory=Counter)
    fail_next: deque[DispatchFailed] = field(default_factory=deque)
    reject_next: deque[Rejected] = field(default_factory=deque)
    drop_after: Counter[str] = field(default_factory=Counter)
    # (netuid, rao per alpha) set after the next extrinsic passes the pool, before it is applied
    move_price_next: deque[tuple[int, int]] = field(default_factory=deque)

    @staticmethod
    def take(counter: Counter[str], method: str) -> bool:
        for name in (method, "*"):
            if counter[name] > 0:
                counter[name] -= 1
                return True
        return False


def _methods(names: Iterable[str]) -> frozenset[str] | None:
    chosen = frozenset(names)
    return chosen or None


class DevChain:
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
        self.block_time_s = block_time_s
        self.finality_delay_s = finality_delay_s
        self.serve_v15 = serve_v15
        self.verify_signatures = verify_signatures
        self.keep_states = max(keep_states, 2)
        self.faults = Faults()
        self.rpc_counts: Counter[str] = Counter()
        self.state_call_counts: Counter[str] = Counter()
        self.applied: list[Applied] = []
        self.connections_total = 0
        self._salt = genesis_salt if genesis_salt is not None else os.urandom(8)
        self._connections: set[_Connection] = set()
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._sub_counter = 0
        self._metadata_hex = "0x" + self.codec.blobs.raw.hex()
        self._metadata_v15_hex = "0x" + self.codec.blobs.v15_option.hex()
        genesis_state = WorldState()
        self.logic.write_events(genesis_state, [])
        genesis = Block(
            number=0,
            hash="0x" + blake2_256(b"devchain-genesis" + self._salt).hex(),
            parent_hash="0x" + "00" * 32,
            extrinsics=[],
            state=genesis_state,
        )
        self._blocks: list[Block] = [genesis]
        self._by_hash: dict[str, Block] = {genesis.hash: genesis}
        self._handlers: dict[str, Callable[[_Connection, Params], Any]] = {
            name.removeprefix("_rpc_"): getattr(self, name)
            for name in dir(self)
            if name.startswith("_rpc_")
        }
        for alias, target in {
            "chain_getBlockHash": "chain_getBlockHash",
            "chain_getFinalisedHead": "chain_getFinalizedHead",
            "chain_getRuntimeVersion": "state_getRuntimeVersion",
            "state_getStorageAt": "state_getStorage",
            "system_accountNextIndex": "account_nextIndex",
            "chain_subscribeFinalisedHeads": "chain_subscribeFinalizedHeads",
            "chain_unsubscribeFinalisedHeads": "chain_unsubscribeFinalizedHeads",
        }.items():
            self._handlers[alias] = self._handlers[target]

    # ================================================================== lifecycle
    async def start(self) -> DevChain:
        self._server = await serve(
            self._serve, self.host, self.port, max_size=None, compression=None
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if self.block_time_s:
            self._ticker = asyncio.create_task(self._tick(self.block_time_s), name="devchain-tick")
        logger.info("devchain spec %s listening on %s", self.spec, self.url)
        return self

    async def stop(self) -> None:
        if self._ticker is not None:
            await cancel_and_wait([self._ticker], timeout_s=5)
            self._ticker = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

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
        return self._blocks[-1]

    @property
    def _state(self) -> WorldState:
        state = self.head.state
        assert state is not None
        return state

    @property
    def dividend_storage(self) -> str:
        """The storage item SubtensorChain reads in auto mode on this runtime."""
        return self.logic.default_dividend_storage

    @property
    def existential_deposit(self) -> int:
        return int(self.codec.constant("Balances", "ExistentialDeposit"))

    def block(self, ref: str | int) -> Block:
        if isinstance(ref, int):
            return self._blocks[ref]
        return self._by_hash[ref]

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
        return self._seal([], None).hash

    # ================================================================== counters
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

    # ================================================================== faults
    def delay(self, seconds: float, *methods: str) -> None:
        """Answer after `seconds` (only `methods` if given; 0 turns it off)."""
        self.faults.delay_s = seconds
        self.faults.delay_methods = _methods(methods)

    def stall(self, *methods: str) -> None:
        """Never answer requests (only `methods` if given) until `unstall()`."""
        self.faults.stalled = True
        self.faults.stall_methods = _methods(methods)

    def unstall(self) -> None:
        self.faults.stalled = False
        self.faults.stall_methods = None

    def drop_on(self, method: str = "*", times: int = 1) -> None:
        """Abort the TCP connection (no close frame) when `method` is next requested."""
        self.faults.drop_on[method] += times

    def close_on(self, method: str = "*", times: int = 1) -> None:
        """Close the websocket cleanly (code 1000) instead of answering `method`."""
        self.faults.close_on[method] += times

    def drop_after(self, method: str = "*", times: int = 1) -> None:
        """Handle `method` (an extrinsic is admitted and included), then abort the TCP
        connection instead of answering: the work happened, the reply is lost."""
        self.faults.drop_after[method] += times

    def move_price_on_next_extrinsic(self, netuid: int, price_tao: float) -> None:
        """Move the subnet's price once the next extrinsic has passed the pool, before it
        is applied: the price moved between the client's read and inclusion."""
        if netuid == 0 or price_tao <= 0:
            raise ValueError("only a positive price of a non-root subnet can move")
        self.faults.move_price_next.append((netuid, round(price_tao * RAO)))

    def error_on(self, method: str = "*", times: int = 1) -> None:
        """Raise inside the handler of `method`: must come back as a JSON-RPC error."""
        self.faults.error_on[method] += times

    def error_on_storage(self, pallet: str, name: str, times: int = 1) -> None:
        """Answer the next `times` storage reads (`state_getStorage(At)`,
        `state_queryStorageAt`) touching `pallet.name` with a JSON-RPC error, as a node
        whose state backend fails for that item; other reads and the connection are fine."""
        self.codec.storage_function(pallet, name)  # unknown items fail here
        self.faults.error_storage[_item_prefix(pallet, name)] += times

    def _storage_fault(self, keys: Iterable[bytes]) -> None:
        counter = self.faults.error_storage
        for key in keys:
            for prefix, left in counter.items():
                if left > 0 and key.startswith(prefix):
                    counter[prefix] -= 1
                    raise RpcError(-32603, "Internal error", "injected storage read error")

    def fail_next_extrinsic(self, error: str, *, pallet: str = "SubtensorModule") -> None:
        """Include the next extrinsic but fail it with this module error (fee and nonce taken)."""
        self.codec.module_error(error, pallet)  # unknown names fail here, not at submit time
        self.faults.fail_next.append(DispatchFailed(error, pallet))

    def reject_next_extrinsic(
        self, data: str = "Inability to pay some fees (e.g. account balance too low)", *,
        code: int = 1010, message: str = "Invalid Transaction",
    ) -> None:  # fmt: skip
        """Refuse the next extrinsic at the pool: JSON-RPC error, nothing included."""
        self.faults.reject_next.append(Rejected(data, code=code, message=message))

    def clear_faults(self) -> None:
        self.faults = Faults()

    async def drop_connections(self) -> int:
        """Abort every client TCP connection now; returns how many were open."""
        connections = list(self._connections)
        for connection in connections:
            connection.ws.transport.abort()
        await asyncio.sleep(0)
        return len(connections)

    async def close_connections(self, code: int = 1000) -> int:
        """Close every client connection cleanly with a close frame."""
        connections = list(self._connections)
        await asyncio.gather(*(c.ws.close(code=code) for c in connections), return_exceptions=True)
        return len(connections)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # ================================================================== blocks
    def _block_at(self, block_hash: Any) -> Block:
        if block_hash is None:
            return self.head
        block = self._by_hash.get(str(block_hash))
        if block is None:
            raise RpcError(4003, UNKNOWN_BLOCK.format(block_hash))
        if block.state is None:
            raise RpcError(4003, DISCARDED.format(block_hash))
        return block

    def _seal(self, extrinsics: list[DecodedExtrinsic], forced: DispatchFailed | None) -> Block:
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
        self._blocks.append(block)
        self._by_hash[block.hash] = block
        if len(self._blocks) > self.keep_states:
            self._blocks[-self.keep_states - 1].state = None
        self._announce(block)
        return block

    def _announce(self, block: Block) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        header = block.header()
        for connection in list(self._connections):
            for sub, method in list(connection.head_subs.items()):
                task = asyncio.create_task(connection.notify(method, sub, header))
                connection.tasks.add(task)
                task.add_done_callback(connection.tasks.discard)

    def _next_sub(self) -> str:
        self._sub_counter += 1
        return f"0x{blake2_256(self._salt + self._sub_counter.to_bytes(8, 'little')).hex()[:16]}"

    # ================================================================== websocket plumbing
    async def _serve(self, ws: ServerConnection) -> None:
        connection = _Connection(ws)
        self._connections.add(connection)
        self.connections_total += 1
        try:
            async for message in ws:
                task = asyncio.create_task(self._on_message(connection, message))
                connection.tasks.add(task)
                task.add_done_callback(connection.tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(connection)
            for task in list(connection.tasks):
                task.cancel()

    async def _on_message(self, connection: _Connection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            error = RpcError(-32700, "Parse error").payload()
            await connection.send({"jsonrpc": "2.0", "id": None, "error": error})
            return
        if isinstance(request, list):
            replies = await asyncio.gather(*(self._handle(connection, r) for r in request))
            responses = [response for response, _ in replies if response is not None]
            if responses:
                await connection.send(responses)
            for _, after in replies:
                if after is not None:
                    await after()
            return
        response, after = await self._handle(connection, request)
        if response is not None:
            await connection.send(response)
        if after is not None:
            await after()

    async def _handle(
        self, connection: _Connection, request: Any
    ) -> tuple[dict[str, Any] | None, After | None]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            error = RpcError(-32600, "Invalid Request").payload()
            return {"jsonrpc": "2.0", "id": None, "error": error}, None
        method: str = request["method"]
        request_id = request.get("id")
        params = request.get("params") or []
        if not method.startswith("dev_"):
            self.rpc_counts[method] += 1
            if method == "state_call" and params:
                self.state_call_counts[str(params[0])] += 1
            if await self._misbehave(connection, method):
                return None, None
        base = {"jsonrpc": "2.0", "id": request_id}
        after: After | None = None
        try:
            handler = self._handlers.get(method)
            if handler is None:
                raise RpcError(-32601, "Method not found", method)
            if Faults.take(self.faults.error_on, method):
                raise RuntimeError(f"injected internal error in {method}")
            result = handler(connection, params if isinstance(params, list) else [params])
            if asyncio.iscoroutine(result):
                result = await result
            if Faults.take(self.faults.drop_after, method):
                connection.ws.transport.abort()
                return None, None
            if isinstance(result, _Reply):
                result, after = result.result, result.after
            return {**base, "result": result}, after
        except RpcError as exc:
            return {**base, "error": exc.payload()}, None
        except Exception as exc:  # never drop the connection on our own bug: answer it
            logger.exception("devchain internal error in %s", method)
            internal = RpcError(-32603, "Internal error", f"{type(exc).__name__}: {exc}")
            return {**base, "error": internal.payload()}, None

    async def _misbehave(self, connection: _Connection, method: str) -> bool:
        """Apply connection faults; True when the request gets no answer at all."""
        faults = self.faults
        if Faults.take(faults.drop_on, method):
            connection.ws.transport.abort()
            return True
        if Faults.take(faults.close_on, method):
            await connection.ws.close(code=1000)
            return True
        if faults.stalled and (faults.stall_methods is None or method in faults.stall_methods):
            await asyncio.Event().wait()  # until the connection goes away
        if faults.delay_s > 0 and (faults.delay_methods is None or method in faults.delay_methods):
            await asyncio.sleep(faults.delay_s)
        return False

    # ================================================================== RPC: system
    def _rpc_rpc_methods(self, connection: _Connection, params: Params) -> dict[str, Any]:
        names = sorted(name for name in self._handlers if not name.startswith("dev_"))
        return {"version": 1, "methods": names}

    def _rpc_system_chain(self, connection: _Connection, params: Params) -> str:
        return "Bittensor"

    def _rpc_system_name(self, connection: _Connection, params: Params) -> str:
        return "devchain"

    def _rpc_system_version(self, connection: _Connection, params: Params) -> str:
        return f"devchain-spec{self.spec}"

    def _rpc_system_chainType(self, connection: _Connection, params: Params) -> str:
        return "Development"

    def _rpc_system_properties(self, connection: _Connection, params: Params) -> dict[str, Any]:
        return {"ss58Format": 42, "tokenDecimals": 9, "tokenSymbol": "TAO"}

    def _rpc_system_health(self, connection: _Connection, params: Params) -> dict[str, Any]:
        return {"peers": 0, "isSyncing": False, "shouldHavePeers": False}

    # ================================================================== RPC: chain
    def _rpc_chain_getHead(self, connection: _Connection, params: Params) -> str:
        return self.head.hash

    def _rpc_chain_getFinalizedHead(self, connection: _Connection, params: Params) -> str:
        return self.head.hash

    def _rpc_chain_getBlockHash(self, connection: _Connection, params: Params) -> Any:
        number = params[0] if params else None

        def one(value: Any) -> str | None:
            if value is None:
                return self.head.hash
            index = int(value, 16) if isinstance(value, str) else int(value)
            return self._blocks[index].hash if 0 <= index < len(self._blocks) else None

        return [one(n) for n in number] if isinstance(number, list) else one(number)

    def _rpc_chain_getHeader(
        self, connection: _Connection, params: Params
    ) -> dict[str, Any] | None:
        block_hash = params[0] if params else None
        block = self.head if block_hash is None else self._by_hash.get(block_hash)
        return None if block is None else block.header()

    def _rpc_chain_getBlock(self, connection: _Connection, params: Params) -> dict[str, Any] | None:
        block_hash = params[0] if params else None
        block = self.head if block_hash is None else self._by_hash.get(block_hash)
        if block is None:
            return None
        body = {"header": block.header(), "extrinsics": list(block.extrinsics)}
        return {"block": body, "justifications": None}

    def _subscribe_heads(self, connection: _Connection, method: str) -> _Reply:
        sub = self._next_sub()
        connection.head_subs[sub] = method

        async def first_head() -> None:
            await connection.notify(method, sub, self.head.header())

        return _Reply(sub, first_head)

    def _rpc_chain_subscribeNewHeads(self, connection: _Connection, params: Params) -> _Reply:
        return self._subscribe_heads(connection, "chain_newHead")

    def _rpc_chain_subscribeFinalizedHeads(self, connection: _Connection, params: Params) -> _Reply:
        return self._subscribe_heads(connection, "chain_finalizedHead")

    def _rpc_chain_subscribeAllHeads(self, connection: _Connection, params: Params) -> _Reply:
        return self._subscribe_heads(connection, "chain_allHead")

    def _unsubscribe_heads(self, connection: _Connection, params: Params) -> bool:
        return connection.head_subs.pop(str(params[0]) if params else "", None) is not None

    _rpc_chain_unsubscribeNewHeads = _unsubscribe_heads
    _rpc_chain_unsubscribeFinalizedHeads = _unsubscribe_heads
    _rpc_chain_unsubscribeAllHeads = _unsubscribe_heads

    # ================================================================== RPC: state
    def _rpc_state_getRuntimeVersion(
        self, connection: _Connection, params: Params
    ) -> dict[str, Any]:
        if params and params[0] is not None:
            self._block_at(params[0])
        return {
            "specName": "node-subtensor",
            "implName": "node-subtensor",
            "authoringVersion": 1,
            "specVersion": self.spec,
            "implVersion": 1,
            "apis": [],
            "transactionVersion": self.codec.runtime.transaction_version,
            "stateVersion": 1,
        }

    def _rpc_state_getMetadata(self, connection: _Connection, params: Params) -> str:
        return self._metadata_hex

    def _rpc_state_getStorage(self, connection: _Connection, params: Params) -> str | None:
        if not params:
            raise RpcError(-32602, "Invalid params", "expected [key, block_hash?]")
        state = self._block_at(params[1] if len(params) > 1 else None).state
        assert state is not None
        self._storage_fault([_hex_bytes(params[0])])
        value = state.storage.get(_hex_bytes(params[0]))
        return None if value is None else "0x" + value.hex()

    def _rpc_state_queryStorageAt(
        self, connection: _Connection, params: Params
    ) -> list[dict[str, Any]]:
        if not params or not isinstance(params[0], list):
            raise RpcError(-32602, "Invalid params", "expected [[keys], block_hash?]")
        block = self._block_at(params[1] if len(params) > 1 else None)
        assert block.state is not None
        self._storage_fault(_hex_bytes(key) for key in params[0])
        changes = []
        for key in params[0]:
            value = block.state.storage.get(_hex_bytes(key))
            changes.append([key, None if value is None else "0x" + value.hex()])
        return [{"block": block.hash, "changes": changes}]

    def _rpc_state_getKeysPaged(self, connection: _Connection, params: Params) -> list[str]:
        if len(params) < 2:
            raise RpcError(-32602, "Invalid params", "expected [prefix, count, start?, hash?]")
        prefix = _hex_bytes(params[0] or "0x")
        count = int(params[1])
        if count > MAX_KEYS_PAGE:
            raise RpcError(
                -32602, f"count exceeds maximum value. value: {count}, max: {MAX_KEYS_PAGE}"
            )
        start = _hex_bytes(params[2]) if len(params) > 2 and params[2] else None
        state = self._block_at(params[3] if len(params) > 3 else None).state
        assert state is not None
        return ["0x" + key.hex() for key in state.storage.keys_paged(prefix, count, start)]

    def _rpc_state_getKeys(self, connection: _Connection, params: Params) -> list[str]:
        state = self._block_at(params[1] if len(params) > 1 else None).state
        assert state is not None
        prefix = _hex_bytes(params[0] if params else "0x")
        return ["0x" + key.hex() for key in state.storage.keys_with_prefix(prefix)]

    def _rpc_state_call(self, connection: _Connection, params: Params) -> str:
        if len(params) < 2:
            raise RpcError(-32602, "Invalid params", "expected [method, data, block_hash?]")
        name, data = str(params[0]), _hex_bytes(params[1] or "0x")
        block = self._block_at(params[2] if len(params) > 2 else None)
        assert block.state is not None
        if name == "Metadata_metadata_at_version":
            version = int.from_bytes(data[:4], "little") if data else 0
            if version == 15 and self.serve_v15:
                return self._metadata_v15_hex
            if version == self.codec.blobs.raw[4] and not self.serve_v15:
                return "0x01" + self._compact_len(self.codec.blobs.raw) + self._metadata_hex[2:]
            return "0x00"
        if name == "Metadata_metadata_versions":
            return "0x" + self.codec.encode("Vec<u32>", [14, 15] if self.serve_v15 else [14]).hex()
        if name == "Metadata_metadata":
            return "0x" + self._compact_len(self.codec.blobs.raw) + self._metadata_hex[2:]
        try:
            self.codec.runtime_api(name)
        except KeyError:
            raise RpcError(
                -32000,
                f"Client error: Execution failed: Other: Exported method {name} is not found",
            ) from None
        call_params = self.codec.decode_api_params(name, data)
        try:
            answer = self.logic.runtime_api(block.state, name, call_params)
        except LookupError:
            raise RpcError(-32601, f"devchain does not model runtime API {name}") from None
        return "0x" + self.codec.encode_api_result(name, answer).hex()

    def _compact_len(self, data: bytes) -> str:
        return self.codec.encode("Compact<u32>", len(data)).hex()

    # ================================================================== RPC: accounts, payment
    def _rpc_account_nextIndex(self, connection: _Connection, params: Params) -> int:
        if not params:
            raise RpcError(-32602, "Invalid params", "expected [address]")
        try:
            return self.logic.nonce(self._state, str(params[0]))
        except ValueError as exc:
            raise RpcError(-32602, "Invalid params", str(exc)) from None

    def _rpc_payment_queryInfo(self, connection: _Connection, params: Params) -> dict[str, Any]:
        return {
            "weight": {"ref_time": 1_000_000_000, "proof_size": 10_000},
            "class": "normal",
            "partialFee": str(self.logic.fee_rao),
        }

    # ================================================================== RPC: author
    def _admit(self, params: Params) -> tuple[DecodedExtrinsic, Block]:
        if not params or not isinstance(params[0], str):
            raise RpcError(-32602, "Invalid params", "expected [extrinsic_hex]")
        try:
            ext = self.codec.decode_extrinsic(_hex_bytes(params[0]))
        except Exception as exc:
            raise RpcError(
                1002, "Verification Error: Runtime error: Could not decode", str(exc)
            ) from None
        if self.faults.reject_next:
            rejected = self.faults.reject_next.popleft()
            raise RpcError(rejected.code, rejected.message, rejected.data)
        try:
            if self.verify_signatures and ext.signed:
                self._verify_signature(ext)
            self.logic.check(self._state, ext)
        except Rejected as rejected:
            raise RpcError(rejected.code, rejected.message, rejected.data) from None
        forced = self.faults.fail_next.popleft() if self.faults.fail_next else None
        if self.faults.move_price_next:
            netuid, price = self.faults.move_price_next.popleft()
            self._state.prices[netuid] = price
        return ext, self._seal([ext], forced)

    def _verify_signature(self, ext: DecodedExtrinsic) -> None:
        genesis = self._blocks[0].hash
        birth_hash = genesis
        if isinstance(ext.era, tuple | list) and len(ext.era) == 2:
            period, phase = int(ext.era[0]), int(ext.era[1])
            current = self.head.number
            birth = (max(current, phase) - phase) // period * period + phase
            if birth > current:
                raise Rejected("Transaction has an ancient birth block")
            birth_hash = self._blocks[birth].hash
        try:
            payload = self.codec.signing_payload(ext, genesis, birth_hash)
        except ValueError as exc:
            raise Rejected(f"Could not rebuild the signed payload: {exc}", code=1002) from None
        (scheme, signature), *_ = dict(ext.signature or {"?": ""}).items()
        crypto_type = {"Ed25519": 0, "Sr25519": 1, "Ecdsa": 2}.get(scheme)
        if crypto_type is None or ext.signer is None:
            raise Rejected(f"unsupported signature {scheme}")
        public_key = to_public_key(ext.signer).hex()
        verifier = Keypair(public_key=public_key, crypto_type=crypto_type)
        if not verifier.verify(payload, bytes.fromhex(str(signature).removeprefix("0x"))):
            raise Rejected("Transaction has a bad signature")

    def _rpc_author_submitExtrinsic(self, connection: _Connection, params: Params) -> str:
        ext, _ = self._admit(params)
        return ext.hash

    def _rpc_author_submitAndWatchExtrinsic(
        self, connection: _Connection, params: Params
    ) -> _Reply:
        _, block = self._admit(params)
        sub = self._next_sub()
        connection.extrinsic_subs.add(sub)

        async def updates() -> None:
            method = "author_extrinsicUpdate"
            await connection.notify(method, sub, "ready")
            await connection.notify(method, sub, {"inBlock": block.hash})
            # Give a client that only waits for inclusion time to unwatch, as on a real chain.
            await asyncio.sleep(self.finality_delay_s)
            if sub in connection.extrinsic_subs:
                connection.extrinsic_subs.discard(sub)
                await connection.notify(method, sub, {"finalized": block.hash})

        return _Reply(sub, updates)

    def _rpc_author_unwatchExtrinsic(self, connection: _Connection, params: Params) -> bool:
        sub = str(params[0]) if params else ""
        known = sub in connection.extrinsic_subs
        connection.extrinsic_subs.discard(sub)
        return known

    def _rpc_author_pendingExtrinsics(self, connection: _Connection, params: Params) -> list[str]:
        return []

    # ================================================================== RPC: dev_* control
    def _rpc_dev_counts(self, connection: _Connection, params: Params) -> dict[str, Any]:
        return self.counts()

    def _rpc_dev_resetCounts(self, connection: _Connection, params: Params) -> bool:
        self.reset_counts()
        return True

    def _rpc_dev_fund(self, connection: _Connection, params: Params) -> int:
        address, tao = str(params[0]), float(params[1])
        self.fund(address, tao)
        return self.balance(address)

    def _rpc_dev_balance(self, connection: _Connection, params: Params) -> int:
        return self.balance(str(params[0]))

    def _rpc_dev_stake(self, connection: _Connection, params: Params) -> int:
        return self.stake(str(params[0]), str(params[1]), int(params[2]))

    def _rpc_dev_addSubnet(self, connection: _Connection, params: Params) -> list[int]:
        self.add_subnet(int(params[0]), price_tao=float(params[1]) if len(params) > 1 else 1.0)
        return self.subnets()

    def _rpc_dev_setPrice(self, connection: _Connection, params: Params) -> int:
        self.set_price(int(params[0]), float(params[1]))
        return self.price(int(params[0]))

    def _rpc_dev_setDividend(self, connection: _Connection, params: Params) -> int:
        netuid, hotkey, amount = int(params[0]), str(params[1]), params[2]
        storage = str(params[3]) if len(params) > 3 and params[3] else None
        self.set_dividend(netuid, hotkey, None if amount is None else int(amount), storage=storage)
        return self.dividend(netuid, hotkey, storage=storage)

    def _rpc_dev_sealBlock(self, connection: _Connection, params: Params) -> str:
        return self.seal_block()

    def _rpc_dev_applied(self, connection: _Connection, params: Params) -> list[dict[str, Any]]:
        return [
            {
                "block": a.block,
                "index": a.index,
                "hash": a.hash,
                "signer": a.signer,
                "call": f"{a.pallet}.{a.call}",
                "args": {
                    k: v if isinstance(v, int | str | bool) else str(v) for k, v in a.args.items()
                },
                "success": a.success,
                "error": a.error,
                "fee": a.fee,
            }
            for a in self.applied
        ]

    def _rpc_dev_fault(self, connection: _Connection, params: Params) -> bool:
        """["stall", methods...] | ["unstall"] | ["delay", seconds, methods...] |
        ["drop_on", method] | ["close_on", method] | ["error_on", method] |
        ["error_storage", pallet, name, times?] |
        ["fail_next", ErrorName] | ["reject_next", data?] | ["drop_after", method] |
        ["move_price", netuid, price_tao] | ["clear"]"""
        kind, rest = (str(params[0]), params[1:]) if params else ("", [])
        if kind == "stall":
            self.stall(*map(str, rest))
        elif kind == "unstall":
            self.unstall()
        elif kind == "delay":
            self.delay(float(rest[0]), *map(str, rest[1:]))
        elif kind in ("drop_on", "close_on", "error_on", "drop_after"):
            getattr(self, kind)(str(rest[0]) if rest else "*")
        elif kind == "error_storage":
            self.error_on_storage(str(rest[0]), str(rest[1]), int(rest[2]) if len(rest) > 2 else 1)
        elif kind == "fail_next":
            self.fail_next_extrinsic(str(rest[0]))
        elif kind == "reject_next":
            self.reject_next_extrinsic(*map(str, rest[:1]))
        elif kind == "move_price":
            self.move_price_on_next_extrinsic(int(rest[0]), float(rest[1]))
        elif kind == "clear":
            self.clear_faults()
        else:
            raise RpcError(-32602, "Invalid params", f"unknown fault {kind!r}")
        return True


def _item_prefix(pallet: str, name: str) -> bytes:
    """twox128(pallet) ++ twox128(name): the key prefix of every entry of a storage item."""
    import xxhash  # the SDK's own storage-key hasher

    def twox128(text: str) -> bytes:
        data = text.encode()
        return b"".join(xxhash.xxh64(data, seed=seed).digest()[::-1] for seed in (0, 1))

    return twox128(pallet) + twox128(name)


def _hex_bytes(value: Any) -> bytes:
    text = str(value)
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise RpcError(-32602, "Invalid params", f"not hex: {text[:80]}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for 'chain unreachable' scenarios)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
