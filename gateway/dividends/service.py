"""Dividend lookups: the chain read behind the dividends cache (trades: gateway.trades.trigger)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.dividends.cache import Dividends, DividendsCache, cache_key
from gateway.metrics import CHAIN_READS
from shared.chain import ChainClient, DividendSnapshot
from shared.errors import ChainError, ChainTimeout

DEADLINE_MARGIN_S = 0.5


def _to_cache(snapshot: DividendSnapshot) -> dict[str, Any]:
    return {
        "entries": [[e.netuid, e.hotkey, e.dividend] for e in snapshot.entries],
        "storage": snapshot.storage,
        "unit": snapshot.unit,
        "block": snapshot.block,
    }


class DividendsService:
    def __init__(self, chain: ChainClient, cache: DividendsCache, *, timeout_s: float) -> None:
        self._chain = chain
        self.cache = cache
        self._timeout = timeout_s

    async def lookup(self, netuid: int | None, hotkey: str | None) -> Dividends:
        _, kind = cache_key(netuid, hotkey)

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

        return await self.cache.get_or_load(netuid, hotkey, load)
