"""GET /api/v1/tao_dividends: validation, auth, cache, and the trade trigger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.deps import CallerDep, RequestIdDep, StateDep, hotkey_param
from gateway.dividends.presenter import dividends_body, trade_fields
from gateway.dividends.schemas import DividendCollectionResponse, DividendResponse

router = APIRouter(prefix="/api/v1", tags=["dividends"])

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing, malformed, unknown or revoked token"},
    422: {"description": "Invalid netuid or hotkey"},
    429: {"description": "Rate limit reached (see Retry-After)"},
    503: {"description": "Redis or the chain cannot answer"},
    504: {"description": "The chain did not answer in time"},
}


@router.get(
    "/tao_dividends",
    response_model=DividendResponse | DividendCollectionResponse,
    responses=ERROR_RESPONSES,
    summary="Tao dividends for a subnet and hotkey (both optional)",
)
async def tao_dividends(
    state: StateDep,
    caller: CallerDep,
    request_id: RequestIdDep,
    netuid: Annotated[
        int | None, Query(ge=0, le=65535, description="Subnet id; 0 is the root subnet.")
    ] = None,
    hotkey: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Hotkey SS58 address.")
    ] = None,
    trade: Annotated[
        bool | None,
        Query(description="Enqueue the sentiment-driven stake trade (default TRADE_BY_DEFAULT)."),
    ] = None,
) -> DividendResponse | DividendCollectionResponse:
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    settings = state.settings
    do_trade = settings.trade_by_default if trade is None else trade
    if do_trade:
        state.limiter.hit(caller.token_hash[:16], "trade", settings.trade_rate_limit_per_min)

    view = await state.dividends.lookup(netuid, hotkey)
    result = None
    trade_netuid = settings.default_netuid if netuid is None else netuid
    trade_hotkey = hotkey or settings.default_hotkey
    if do_trade:
        result = await state.trades.request(
            trade_netuid, trade_hotkey, request_id=request_id, requested_by=caller.name, view=view
        )
    return dividends_body(netuid, hotkey, view, trade_fields(result, trade_netuid, trade_hotkey))
