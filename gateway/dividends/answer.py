"""The answer to an admitted caller's dividends query.

The router and the cache-hit fast path both end here, so the trade decision (scope and
TRADE_BY_DEFAULT), the trade rate limit, the default pair, the lookup and the body are
decided in one place, in the router's order: 403, then 429, then the lookup, then the trade.
"""

from __future__ import annotations

from gateway.dividends.query import DividendsQuery
from gateway.scopes import Caller, trade_wanted
from gateway.state import AppState


async def answer(state: AppState, caller: Caller, query: DividendsQuery, request_id: str) -> bytes:
    """The JSON body; raises the AppError the request is refused with."""
    settings = state.settings
    do_trade = trade_wanted(caller, query.trade, trade_by_default=settings.trade_by_default)
    if do_trade:
        state.limiter.hit(caller.owner, "trade", settings.trade_rate_limit_per_min)
    dividends = await state.dividends.lookup(query.netuid, query.hotkey)
    pair = query.trade_pair(settings)
    result = None
    if do_trade:
        result = await state.trades.request(
            *pair, source="api", request_id=request_id, requested_by=caller.owner
        )
    return state.dividends.cache.body(dividends, result, pair)
