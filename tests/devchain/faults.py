"""Misbehaviour on demand: the faults a test can inject, and where each one acts.

`Faults` is the armed state, one object per node for its whole life. `FaultControls` is
the in-process fault API `DevChain` mixes in (`node.stall()`, `node.drop_on(...)`, ...;
the `dev_fault` control method calls the same methods). The faults act in three places:
the transport asks `Faults.before` and takes `error_on` / `drop_after` around each
handler, the state namespace asks `Faults.check_storage` before a storage read, and
the transaction pool pops `reject_next`, `fail_next` and `move_price_next` when it admits
an extrinsic. Kept in one module so every way the node can misbehave is listed once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.devchain.jsonrpc import RpcError
from tests.devchain.logic import RAO, DispatchFailed, Rejected

if TYPE_CHECKING:
    from tests.devchain.codec import RuntimeCodec
    from tests.devchain.transport import Connection, Transport


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

    def clear(self) -> None:
        """Disarm everything (in place: the transport holds this object)."""
        fresh = Faults()
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, getattr(fresh, spec.name))

    async def before(self, connection: Connection, method: str) -> bool:
        """Apply connection faults; True when the request gets no answer at all."""
        if Faults.take(self.drop_on, method):
            connection.ws.transport.abort()
            return True
        if Faults.take(self.close_on, method):
            await connection.ws.close(code=1000)
            return True
        if self.stalled and (self.stall_methods is None or method in self.stall_methods):
            await asyncio.Event().wait()  # until the connection goes away
        if self.delay_s > 0 and (self.delay_methods is None or method in self.delay_methods):
            await asyncio.sleep(self.delay_s)
        return False

    def check_storage(self, keys: Iterable[bytes]) -> None:
        """Raise the injected storage error if one of `keys` is in an armed item."""
        counter = self.error_storage
        for key in keys:
            for prefix, left in counter.items():
                if left > 0 and key.startswith(prefix):
                    counter[prefix] -= 1
                    raise RpcError(-32603, "Internal error", "injected storage read error")


def _methods(names: Iterable[str]) -> frozenset[str] | None:
    chosen = frozenset(names)
    return chosen or None


def _item_prefix(pallet: str, name: str) -> bytes:
    """twox128(pallet) ++ twox128(name): the key prefix of every entry of a storage item."""
    import xxhash  # the SDK's own storage-key hasher

    def twox128(text: str) -> bytes:
        data = text.encode()
        return b"".join(xxhash.xxh64(data, seed=seed).digest()[::-1] for seed in (0, 1))

    return twox128(pallet) + twox128(name)


class FaultControls:
    """The in-process fault API of `DevChain` (see README.md, "Faults")."""

    faults: Faults
    codec: RuntimeCodec
    transport: Transport

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
        self.faults.clear()

    async def drop_connections(self) -> int:
        """Abort every client TCP connection now; returns how many were open."""
        return await self.transport.drop_all()

    async def close_connections(self, code: int = 1000) -> int:
        """Close every client connection cleanly with a close frame."""
        return await self.transport.close_all(code)
