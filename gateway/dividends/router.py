"""GET /api/v1/tao_dividends: validation, auth, cache, and the trade trigger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.deps import (
    SS58_CONSTRAINTS,
    SS58_DESCRIPTION,
    SS58_EXAMPLE,
    ReaderDep,
    RequestIdDep,
    StateDep,
    hotkey_param,
)
from gateway.dividends.presenter import dividends_body
from gateway.dividends.schemas import DividendCollectionResponse, DividendResponse
from gateway.errors import documented
from gateway.scopes import trade_wanted
from gateway.trades.presenter import trade_fields

router = APIRouter(prefix="/api/v1", tags=["dividends"])

ERROR_RESPONSES = documented(
    {
        401: "`unauthorized`: missing, malformed, unknown or revoked token",
        403: "`insufficient_scope`: the token lacks `read`, or `trade` with `trade=true`",
        422: "`validation_error`: invalid netuid, hotkey or trade (the message names it)",
        429: "`rate_limited`: the token's rate limit (or the trade limit with a trade), or too "
        "many failed authentications from this address; see Retry-After",
        503: "`redis_unavailable`, `chain_unavailable`, `storage_unsupported` or "
        "`database_unavailable` (token store): a dependency cannot answer; `auth_busy`: too "
        "many token checks in progress (see Retry-After)",
        504: "`chain_timeout`: the chain did not answer in time",
    }
)


@router.get(
    "/tao_dividends",
    response_model=DividendResponse | DividendCollectionResponse,
    responses=ERROR_RESPONSES,
    summary="Tao dividends for a subnet and hotkey (both optional)",
    description="Scopes: `read`; `trade` too to enqueue a trade. Without `trade`, "
    "`trade=true` answers 403 `insufficient_scope` and an omitted `trade` never trades.",
)
async def tao_dividends(
    state: StateDep,
    caller: ReaderDep,
    request_id: RequestIdDep,
    netuid: Annotated[
        int | None, Query(ge=0, le=65535, description="Subnet id; 0 is the root subnet.")
    ] = None,
    hotkey: Annotated[
        str | None,
        Query(
            description=f"Hotkey. {SS58_DESCRIPTION}", examples=[SS58_EXAMPLE], **SS58_CONSTRAINTS
        ),
    ] = None,
    trade: Annotated[
        bool | None,
        Query(
            description="Enqueue the sentiment-driven stake trade (needs the `trade` scope). "
            "Default: TRADE_BY_DEFAULT for trade-scoped tokens, false for the others."
        ),
    ] = None,
) -> DividendResponse | DividendCollectionResponse:
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    settings = state.settings
    do_trade = trade_wanted(caller, trade, trade_by_default=settings.trade_by_default)
    if do_trade:
        state.limiter.hit(caller.owner, "trade", settings.trade_rate_limit_per_min)

    view = await state.dividends.lookup(netuid, hotkey)
    result = None
    trade_netuid = settings.default_netuid if netuid is None else netuid
    trade_hotkey = hotkey or settings.default_hotkey
    if do_trade:
        result = await state.trades.request(
            trade_netuid,
            trade_hotkey,
            source="api",
            request_id=request_id,
            requested_by=caller.owner,
        )
    return dividends_body(netuid, hotkey, view, trade_fields(result, trade_netuid, trade_hotkey))
