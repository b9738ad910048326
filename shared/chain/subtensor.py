"""The one place that talks to the chain through bittensor's `AsyncSubtensor`.

One client per process, opened at start-up and closed at shutdown. When the
chain cannot be reached the process still starts: reads fail fast with
`ChainUnavailable` while a background task reconnects with capped backoff.
Every call is bounded by `CHAIN_TIMEOUT_S`, because a websocket closed cleanly
by the server can leave a request waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from loguru import logger

from shared.backoff import Backoff
from shared.chain.staking_types import ChainNotConnected
from shared.chain.types import (
    ChainStatus,
    DividendEntry,
    DividendSnapshot,
    DividendStorage,
    StakeEntry,
    StakeSnapshot,
)
from shared.errors import (
    ChainBadResponse,
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    StorageUnsupported,
)
from shared.logging import adopt_sdk_logging
from shared.settings import Settings

T = TypeVar("T")

PALLET = "SubtensorModule"
STORAGE_PREFERENCE: tuple[DividendStorage, ...] = (
    "TaoDividendsPerSubnet",
    "RootAlphaDividendsPerSubnet",
)
MAP_PAGE_SIZE = 1000
# A timeout can be one slow answer; several in a row mean the socket is stuck.
TIMEOUTS_BEFORE_RECONNECT = 2
# A failed connect is retried after this, doubling up to CHAIN_RETRY_MAX_S.
RECONNECT_FIRST_S = 0.5


def _import_sdk() -> Any:
    """Import bittensor lazily: the import is slow and writes ~/.bittensor."""
    # The encrypted (MEV-protected) staking path cannot be used with a plain node.
    os.environ.setdefault("BT_MEV_PROTECTION", "0")
    from bittensor.core.async_subtensor import AsyncSubtensor

    adopt_sdk_logging()  # the import installed its own console logging; route it through ours
    return AsyncSubtensor


def redact_url(url: str) -> str:
    """The endpoint without credentials or query (a provider key can live in either)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _scalar(value: Any) -> Any:
    return getattr(value, "value", value)


class SubtensorChain:
    """`ChainClient` implementation over bittensor 10.5's `AsyncSubtensor`."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.bittensor_network
        self._network = redact_url(settings.bittensor_network)
        self._timeout = settings.chain_timeout_s
        self._connect_timeout = settings.chain_connect_timeout_s
        self._retry_max = settings.chain_retry_max_s
        self._storage_setting = settings.dividends_storage
        self._read_limit = asyncio.Semaphore(settings.chain_read_concurrency)
        self._subtensor: Any | None = None
        self._endpoint = ""
        self._connector: asyncio.Task[None] | None = None
        self._closed = False
        self._timeouts_in_row = 0
        self._last_error = "not connected yet"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect once (bounded); on failure keep trying in the background."""
        self._connector = asyncio.create_task(self._connect_loop(), name="chain-connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connector), self._connect_timeout)
        if self._subtensor is None:
            logger.warning(
                "chain not reachable at start-up; retrying in the background",
                network=self._network,
                error=self._last_error,
            )

    async def close(self) -> None:
        self._closed = True
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
        await self._drop()

    @property
    def connected(self) -> bool:
        return self._subtensor is not None

    async def _connect_loop(self) -> None:
        sdk = _import_sdk()
        waits = Backoff(first_s=RECONNECT_FIRST_S, cap_s=self._retry_max).waits()
        while not self._closed and self._subtensor is None:
            subtensor = None
            try:
                subtensor = sdk(network=self._url, websocket_shutdown_timer=None)
                self._endpoint = redact_url(str(subtensor.chain_endpoint))
                await asyncio.wait_for(subtensor.initialize(), self._connect_timeout)
                # initialize() leaves the metadata download and decode running in a task
                # that the first read awaits; a read timeout would cancel it and wedge
                # every later read at that block. Finish it here, under the connect bound.
                substrate = subtensor.substrate
                await asyncio.wait_for(
                    substrate.init_runtime(block_hash=substrate.startup_block_hash),
                    self._connect_timeout,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure to connect is retried with backoff
                self._last_error = type(exc).__name__
                logger.warning(
                    "chain connect failed", network=self._network, error=self._last_error
                )
                if subtensor is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(subtensor.close(), 2)
                await asyncio.sleep(waits.next())
                continue
            self._subtensor = subtensor
            self._timeouts_in_row = 0
            logger.info("chain connected", network=self._network, endpoint=self._endpoint)

    async def _drop(self) -> None:
        subtensor, self._subtensor = self._subtensor, None
        if subtensor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(subtensor.close(), 2)

    def _reconnect(self, reason: str) -> None:
        """Throw away the broken connection and reconnect in the background."""
        self._last_error = reason
        if self._closed or (self._connector is not None and not self._connector.done()):
            return
        logger.warning("chain connection lost; reconnecting", error=reason)

        async def run() -> None:
            await self._drop()
            await self._connect_loop()

        self._connector = asyncio.create_task(run(), name="chain-reconnect")

    # ------------------------------------------------------------------ guarded calls
    async def call(
        self, op: str, fn: Callable[[Any], Awaitable[T]], *, timeout_s: float | None = None
    ) -> T:
        """Run `fn(async_subtensor)` with a timeout, mapping SDK errors to `ChainError`s.

        `ChainNotConnected` (a `ChainUnavailable`) is raised only here, before `fn` runs:
        nothing reached the node."""
        subtensor = self._subtensor
        if subtensor is None:
            raise ChainNotConnected(f"chain {self._network} is not connected ({self._last_error})")
        timeout = self._timeout if timeout_s is None else timeout_s
        try:
            result = await asyncio.wait_for(fn(subtensor), timeout)
        except TimeoutError as exc:
            self._timeouts_in_row += 1
            if self._timeouts_in_row >= TIMEOUTS_BEFORE_RECONNECT:
                self._reconnect("repeated timeouts")
            raise ChainTimeout(f"chain did not answer {op} within {timeout:g}s") from exc
        except ChainError:
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled
            # A task inside the SDK was cancelled, not us: never leak CancelledError.
            self._reconnect(f"SDK task cancelled during {op}")
            raise ChainUnavailable(f"chain {op} failed: SDK task cancelled") from None
        except Exception as exc:
            raise self._translate(op, exc) from exc
        self._timeouts_in_row = 0
        return result

    def _translate(self, op: str, exc: Exception) -> ChainError:
        name = type(exc).__name__
        if name == "StorageFunctionNotFound":
            return StorageUnsupported(str(exc))
        if isinstance(exc, ConnectionError | OSError) or "ConnectionClosed" in name:
            self._reconnect(name)
            return ChainUnavailable(f"chain connection lost during {op}")
        return ChainBadResponse(f"chain {op} failed: {name}: {exc}")

    # ------------------------------------------------------------------ reads
    async def _pin(self, subtensor: Any) -> tuple[str, int]:
        block_hash = str(await subtensor.substrate.get_chain_head())
        block = int(await subtensor.substrate.get_block_number(block_hash))
        return block_hash, block

    async def _storage(self, subtensor: Any, block_hash: str) -> DividendStorage:
        runtime = await subtensor.substrate.init_runtime(block_hash=block_hash)
        pallet = runtime.metadata.get_metadata_pallet(PALLET)
        present = {
            name
            for name in STORAGE_PREFERENCE
            if pallet is not None and pallet.get_storage_function(name) is not None
        }
        if self._storage_setting != "auto":
            if self._storage_setting not in present:
                raise StorageUnsupported(
                    f"DIVIDENDS_STORAGE={self._storage_setting} but the connected runtime "
                    f"has no {PALLET}.{self._storage_setting}"
                )
            return self._storage_setting
        for name in STORAGE_PREFERENCE:
            if name in present:
                return name
        raise StorageUnsupported(
            f"the connected runtime has neither {PALLET}.TaoDividendsPerSubnet "
            "nor RootAlphaDividendsPerSubnet"
        )

    async def _map(
        self, subtensor: Any, storage: str, netuid: int, block_hash: str
    ) -> list[DividendEntry]:
        async with self._read_limit:
            result = await subtensor.substrate.query_map(
                module=PALLET,
                storage_function=storage,
                params=[netuid],
                block_hash=block_hash,
                page_size=MAP_PAGE_SIZE,
            )
            entries = []
            async for key, value in result:
                entries.append(DividendEntry(netuid, str(_scalar(key)), int(_scalar(value) or 0)))
        return entries

    async def dividend(self, netuid: int, hotkey: str) -> DividendSnapshot:
        async def read(subtensor: Any) -> DividendSnapshot:
            block_hash, block = await self._pin(subtensor)
            storage = await self._storage(subtensor, block_hash)
            # query_multi raises on a JSON-RPC error; substrate.query would decode an
            # error answer as the storage default and report a dividend of 0.
            key = await subtensor.substrate.create_storage_key(
                PALLET, storage, [netuid, hotkey], block_hash=block_hash
            )
            ((_, value),) = await subtensor.substrate.query_multi([key], block_hash=block_hash)
            amount = int(_scalar(value) or 0)
            return DividendSnapshot(
                [DividendEntry(netuid, hotkey, amount)], storage, block, block_hash
            )

        return await self.call("dividend", read)

    async def subnet_dividends(self, netuid: int) -> DividendSnapshot:
        async def read(subtensor: Any) -> DividendSnapshot:
            block_hash, block = await self._pin(subtensor)
            storage = await self._storage(subtensor, block_hash)
            entries = await self._map(subtensor, storage, netuid, block_hash)
            return DividendSnapshot(entries, storage, block, block_hash)

        return await self.call("subnet_dividends", read)

    async def all_dividends(self) -> DividendSnapshot:
        async def read(subtensor: Any) -> DividendSnapshot:
            block_hash, block = await self._pin(subtensor)
            storage = await self._storage(subtensor, block_hash)
            netuids = await self.netuids(subtensor, block_hash)
            per_subnet = await asyncio.gather(
                *(self._map(subtensor, storage, netuid, block_hash) for netuid in netuids)
            )
            entries = [entry for chunk in per_subnet for entry in chunk]
            return DividendSnapshot(entries, storage, block, block_hash)

        return await self.call("all_dividends", read)

    async def coldkey_stakes(self, coldkeys: Sequence[str]) -> StakeSnapshot:
        """`StakeReader`: one runtime call per coldkey (StakeInfoRuntimeApi), at one block."""

        async def one(subtensor: Any, coldkey: str, block_hash: str) -> list[StakeEntry]:
            async with self._read_limit:
                infos = await subtensor.get_stake_info_for_coldkey(coldkey, block_hash=block_hash)
            return [
                StakeEntry(coldkey, str(info.hotkey_ss58), int(info.netuid), int(info.stake.rao))
                for info in infos
            ]

        async def read(subtensor: Any) -> StakeSnapshot:
            block_hash, block = await self._pin(subtensor)
            chunks = await asyncio.gather(*(one(subtensor, c, block_hash) for c in coldkeys))
            return StakeSnapshot([e for chunk in chunks for e in chunk], block, block_hash)

        return await self.call("coldkey_stakes", read)

    async def netuids(self, subtensor: Any, block_hash: str) -> list[int]:
        result = await subtensor.substrate.query_map(
            module=PALLET,
            storage_function="NetworksAdded",
            block_hash=block_hash,
            page_size=MAP_PAGE_SIZE,
        )
        return sorted([int(_scalar(k)) async for k, added in result if _scalar(added)])

    async def status(self) -> ChainStatus:
        if self._subtensor is None:
            return ChainStatus(False, self._network, self._endpoint, detail=self._last_error)

        async def read(subtensor: Any) -> ChainStatus:
            block_hash, block = await self._pin(subtensor)
            storage = await self._storage(subtensor, block_hash)
            return ChainStatus(True, self._network, self._endpoint, block=block, storage=storage)

        try:
            return await self.call("status", read)
        except ChainError as exc:
            return ChainStatus(False, self._network, self._endpoint, detail=exc.message)
