"""The gateway's trade trigger: `shared.trades.TradeTrigger` behind a per-process cooldown memory.

The atomic reserve-and-publish script stays in `shared/trades.py` (the schedule and
replay in pipeline/ use it too); this side adds what only a request-serving process
needs: repeats of a pair inside its cooldown cost no Redis call, and concurrent
requests for one pair share one script call.
"""

from __future__ import annotations

import time

from gateway.metrics import TRADES
from shared.events import DividendRequested, Source
from shared.ids import new_id
from shared.singleflight import SingleFlight
from shared.trades import TradeTrigger, TriggerResult

MAX_REMEMBERED_PAIRS = 10_000


class TradeService:
    """Enqueues trades; remembers each pair's cooldown so repeats cost no Redis call."""

    def __init__(self, trigger: TradeTrigger) -> None:
        self._trigger = trigger
        self._cooling: dict[tuple[int, str], tuple[float, str]] = {}
        self._flight: SingleFlight[TriggerResult] = SingleFlight()

    def _cooling_trade(self, netuid: int, hotkey: str) -> TriggerResult | None:
        """The pair's trade still inside its cooldown, as known to this process (no I/O)."""
        known = self._cooling.get((netuid, hotkey))
        now = time.monotonic()
        if known is None or known[0] <= now:
            return None
        return TriggerResult(False, known[1], cooldown_left_s=known[0] - now)

    async def request(
        self,
        netuid: int,
        hotkey: str,
        *,
        source: Source,
        request_id: str,
        requested_by: str,
    ) -> TriggerResult:
        """Enqueue a trade for the pair unless it is inside the cooldown (known here or in
        Redis); the answer names the enqueued trade or the one still cooling down."""
        known = self._cooling_trade(netuid, hotkey)
        if known is not None:
            TRADES.labels("cooldown").inc()
            return known
        event = DividendRequested(
            trade_id=new_id(),
            netuid=netuid,
            hotkey=hotkey,
            source=source,
            request_id=request_id,
            requested_by=requested_by,
        )
        pair = (netuid, hotkey)
        result = await self._flight.do(pair, lambda: self._trigger.trigger(event))
        left = self._trigger.cooldown_s if result.enqueued else result.cooldown_left_s
        if result.trade_id != event.trade_id:
            # This request joined another request's trigger: that one enqueued the trade.
            result = TriggerResult(False, result.trade_id, cooldown_left_s=left)
        now = time.monotonic()
        if len(self._cooling) > MAX_REMEMBERED_PAIRS:
            self._cooling = {p: v for p, v in self._cooling.items() if v[0] > now}
        known_until = self._cooling.get(pair, (0.0, ""))[0]
        if now + left > known_until:
            self._cooling[pair] = (now + left, result.trade_id)
        TRADES.labels("enqueued" if result.enqueued else "cooldown").inc()
        return result
