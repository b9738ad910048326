"""Dividend lookups through the two-level cache, and the trade trigger with a cooldown memory."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from gateway.metrics import CACHE_LOOKUPS, CHAIN_READS, TRADES
from shared.cache import TwoLevelCache
from shared.chain import ChainClient, DividendSnapshot
from shared.errors import ChainError, ChainTimeout
from shared.events import DividendRequested
from shared.ids import new_id
from shared.singleflight import SingleFlight
from shared.trades import TradeTrigger, TriggerResult

MAX_REMEMBERED_PAIRS = 10_000


@dataclass(frozen=True, slots=True)
class DividendsView:
    entries: list[tuple[int, str, int]]
    storage: str
    unit: str
    block: int
    cached: bool


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

    async def lookup(self, netuid: int | None, hotkey: str | None) -> DividendsView:
        if netuid is not None and hotkey is not None:
            key, kind = f"{netuid}:{hotkey}", "entry"
        elif netuid is not None:
            key, kind = f"{netuid}:*", "subnet"
        else:
            key, kind = "*:*", "all"

        async def load() -> dict[str, Any]:
            if netuid is not None and hotkey is not None:
                read = self._chain.dividend(netuid, hotkey)
            elif netuid is not None:
                read = self._chain.subnet_dividends(netuid)
            else:
                read = self._chain.all_dividends()
            try:
                # The chain client bounds each call too; this deadline holds for any client.
                snapshot = await asyncio.wait_for(read, self._timeout)
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
        value = result.value
        entries = [(int(n), str(h), int(d)) for n, h, d in value["entries"]]
        if netuid is None and hotkey is not None:
            entries = [entry for entry in entries if entry[1] == hotkey]
        return DividendsView(
            entries, value["storage"], value["unit"], value["block"], result.cached
        )


class TradeService:
    """Enqueues trades; remembers each pair's cooldown so repeats cost no Redis call."""

    def __init__(self, trigger: TradeTrigger) -> None:
        self._trigger = trigger
        self._cooling: dict[tuple[int, str], tuple[float, str]] = {}
        self._flight: SingleFlight[TriggerResult] = SingleFlight()

    async def request(
        self,
        netuid: int,
        hotkey: str,
        *,
        request_id: str,
        requested_by: str,
        view: DividendsView | None,
    ) -> TriggerResult:
        pair = (netuid, hotkey)
        now = time.monotonic()
        known = self._cooling.get(pair)
        if known is not None and known[0] > now:
            TRADES.labels("cooldown").inc()
            return TriggerResult(False, known[1], cooldown_left_s=known[0] - now)

        entry = None
        if view is not None:
            entry = next((d for n, h, d in view.entries if (n, h) == pair), None)
        event = DividendRequested(
            trade_id=new_id(),
            netuid=netuid,
            hotkey=hotkey,
            source="api",
            request_id=request_id,
            requested_by=requested_by,
            dividend=entry,
            unit=view.unit if view is not None and entry is not None else None,
            block=view.block if view is not None else None,
        )
        result = await self._flight.do(pair, lambda: self._trigger.trigger(event))
        if result.trade_id != event.trade_id:
            # Another request's trigger (or another process) owns this pair right now.
            result = TriggerResult(False, result.trade_id, cooldown_left_s=result.cooldown_left_s)
        left = self._trigger.cooldown_s if result.enqueued else result.cooldown_left_s
        if len(self._cooling) > MAX_REMEMBERED_PAIRS:
            self._cooling = {p: v for p, v in self._cooling.items() if v[0] > now}
        self._cooling[pair] = (time.monotonic() + left, result.trade_id)
        TRADES.labels("enqueued" if result.enqueued else "cooldown").inc()
        return result
