"""The dividends answers of this process: the two-level data cache and the bodies built from it.

One object, read by the router and the fast path alike: `holds` says, without I/O, whether an
answer is in this process's memory (the fast path takes only those), `get_or_load` reads
through memory, then Redis, then the loader, and `body` serializes an answer once per loaded
value and trade outcome, so a repeated hit re-serves the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.dividends.presenter import dividends_body
from gateway.metrics import CACHE_LOOKUPS
from gateway.trades.presenter import trade_fields
from shared.cache import TwoLevelCache
from shared.trades import TriggerResult

MAX_BODIES: Final = 4096
_LOOKUPS = {level: CACHE_LOOKUPS.labels(level) for level in ("memory", "redis", "source")}


@dataclass(frozen=True, slots=True)
class DividendsView:
    entries: list[tuple[int, str, int]]
    storage: str
    unit: str
    block: int
    cached: bool


@dataclass(frozen=True, slots=True)
class Dividends:
    """One answer of the cache for (netuid, hotkey), as stored (the view is built on demand).

    `expires_at` identifies the loaded value (None when this process no longer holds it)."""

    netuid: int | None
    hotkey: str | None
    value: dict[str, Any]
    cached: bool
    expires_at: float | None

    def view(self) -> DividendsView:
        entries = [(int(n), str(h), int(d)) for n, h, d in self.value["entries"]]
        if self.netuid is None and self.hotkey is not None:
            entries = [entry for entry in entries if entry[1] == self.hotkey]
        value = self.value
        return DividendsView(entries, value["storage"], value["unit"], value["block"], self.cached)


def cache_key(netuid: int | None, hotkey: str | None) -> tuple[str, str]:
    """The cache key and read kind; a hotkey without netuid filters the all-subnets read."""
    if netuid is not None and hotkey is not None:
        return f"{netuid}:{hotkey}", "entry"
    if netuid is not None:
        return f"{netuid}:*", "subnet"
    return "*:*", "all"


# A body is keyed by its query, the loaded value it shows, and its trade part.
BodyKey = tuple[int | None, str | None, float, bool, tuple[int, str], str | None, bool, str]


class DividendsCache:
    def __init__(self, data: TwoLevelCache, *, max_bodies: int = MAX_BODIES) -> None:
        self._data = data
        self._bodies: dict[BodyKey, bytes] = {}
        self._max_bodies = max_bodies

    def holds(self, netuid: int | None, hotkey: str | None) -> bool:
        """Whether this process holds a fresh answer for the query (no I/O)."""
        key, _ = cache_key(netuid, hotkey)
        return self._data.local.entry(key, time.time()) is not None

    async def get_or_load(
        self,
        netuid: int | None,
        hotkey: str | None,
        load: Callable[[], Awaitable[dict[str, Any]]],
    ) -> Dividends:
        key, _ = cache_key(netuid, hotkey)
        held = self._data.local.entry(key, time.time())
        if held is not None:  # the hit of `TwoLevelCache.get_or_load`, with its expiry
            _LOOKUPS["memory"].inc()
            return Dividends(netuid, hotkey, held[1], True, held[0])
        result = await self._data.get_or_load(key, load)
        _LOOKUPS[result.level].inc()
        held = self._data.local.entry(key, time.time())
        expires_at = held[0] if held is not None and held[1] is result.value else None
        return Dividends(netuid, hotkey, result.value, result.cached, expires_at)

    def body(
        self, dividends: Dividends, trade: TriggerResult | None, pair: tuple[int, str]
    ) -> bytes:
        """The JSON answer: `dividends` with the trade part of `trade` for `pair`."""
        if dividends.expires_at is None:
            return self._render(dividends, trade, pair)
        memo_key: BodyKey = (
            dividends.netuid,
            dividends.hotkey,
            dividends.expires_at,
            dividends.cached,
            pair,
            None if trade is None else trade.trade_id,
            trade is not None and trade.enqueued,
            # The detail shows the cooldown in whole seconds (gateway.trades.presenter).
            "" if trade is None else f"{trade.cooldown_left_s:.0f}",
        )
        body = self._bodies.get(memo_key)
        if body is None:
            body = self._render(dividends, trade, pair)
            if len(self._bodies) >= self._max_bodies:
                self._bodies.clear()
            self._bodies[memo_key] = body
        return body

    @staticmethod
    def _render(dividends: Dividends, trade: TriggerResult | None, pair: tuple[int, str]) -> bytes:
        fields = trade_fields(trade, *pair)
        answer = dividends_body(dividends.netuid, dividends.hotkey, dividends.view(), fields)
        return answer.model_dump_json().encode()
