"""Dividend lookups through the two-level cache (trades: gateway.trades.trigger)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from gateway.metrics import CACHE_LOOKUPS, CHAIN_READS
from shared.cache import TwoLevelCache
from shared.chain import ChainClient, DividendSnapshot
from shared.errors import ChainError, ChainTimeout

DEADLINE_MARGIN_S = 0.5


@dataclass(frozen=True, slots=True)
class DividendsView:
    entries: list[tuple[int, str, int]]
    storage: str
    unit: str
    block: int
    cached: bool


def _cache_key(netuid: int | None, hotkey: str | None) -> tuple[str, str]:
    """The cache key and read kind; a hotkey without netuid filters the all-subnets read."""
    if netuid is not None and hotkey is not None:
        return f"{netuid}:{hotkey}", "entry"
    if netuid is not None:
        return f"{netuid}:*", "subnet"
    return "*:*", "all"


def _view(
    value: dict[str, Any], netuid: int | None, hotkey: str | None, cached: bool
) -> DividendsView:
    entries = [(int(n), str(h), int(d)) for n, h, d in value["entries"]]
    if netuid is None and hotkey is not None:
        entries = [entry for entry in entries if entry[1] == hotkey]
    return DividendsView(entries, value["storage"], value["unit"], value["block"], cached)


def _to_cache(snapshot: DividendSnapshot) -> dict[str, Any]:
    return {
        "entries": [[e.netuid, e.hotkey, e.dividend] for e in snapshot.entries],
        "storage": snapshot.storage,
        "unit": snapshot.unit,
        "block": snapshot.block,
    }


class DividendsService:
    def __init__(self, chain: ChainClient, cache: TwoLevelCache, *, timeout_s: float) -> None:
        self._chain = chain
        self._cache = cache
        self._timeout = timeout_s

    def stamp(self, netuid: int | None, hotkey: str | None) -> float | None:
        """The expiry of the in-process cached answer (unique per load), if any; no I/O."""
        key, _ = _cache_key(netuid, hotkey)
        item = self._cache.local.entry(key, time.time())
        return None if item is None else float(item[0])

    def peek(self, netuid: int | None, hotkey: str | None) -> DividendsView | None:
        """The in-process cached answer, if any; no I/O."""
        key, _ = _cache_key(netuid, hotkey)
        value = self._cache.local.get(key, time.time())
        return None if value is None else _view(value, netuid, hotkey, True)

    async def lookup(self, netuid: int | None, hotkey: str | None) -> DividendsView:
        key, kind = _cache_key(netuid, hotkey)

        async def load() -> dict[str, Any]:
            if netuid is not None and hotkey is not None:
                read = self._chain.dividend(netuid, hotkey)
            elif netuid is not None:
                read = self._chain.subnet_dividends(netuid)
            else:
                read = self._chain.all_dividends()
            try:
                # The chain client bounds each call itself (and counts its timeouts to
                # reconnect a stuck socket); this later deadline holds for any client.
                snapshot = await asyncio.wait_for(read, self._timeout + DEADLINE_MARGIN_S)
            except TimeoutError as exc:
                CHAIN_READS.labels(kind, "chain_timeout").inc()
                raise ChainTimeout(f"chain did not answer within {self._timeout:g}s") from exc
            except ChainError as exc:
                CHAIN_READS.labels(kind, exc.code).inc()
                raise
            CHAIN_READS.labels(kind, "ok").inc()
            return _to_cache(snapshot)

        result = await self._cache.get_or_load(key, load)
        CACHE_LOOKUPS.labels(result.level).inc()
        return _view(result.value, netuid, hotkey, result.cached)
