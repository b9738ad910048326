"""GET /api/v1/trades, GET /api/v1/trades/{trade_id}, GET /api/v1/stake_actions,
POST /api/v1/trades."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from gateway.deps import ReaderDep, RequestIdDep, StateDep, TraderDep, hotkey_param
from gateway.errors import BODY_ERRORS, documented
from gateway.headers import no_store
from gateway.listing import COMMON_ERRORS as COMMON_ERRORS  # gateway.streams reads it here
from gateway.listing import (
    DEFAULT_LIMIT,
    OWN_TRADES,
    READ_ERRORS,
    HotkeyQuery,
    IdListingDep,
    LimitQuery,
    Listing,
    NetuidQuery,
    visible_owner,
)
from gateway.trades import service
from gateway.trades.presenter import trade_fields
from gateway.trades.schemas import (
    TRADE_CURSOR_PATTERN,
    TRADE_ID_EXAMPLE,
    TRADE_ID_PATTERN,
    StakeActionPage,
    StakeStatus,
    TradeOut,
    TradePage,
    TradeRequest,
    TradeTriggered,
)

router = APIRouter(prefix="/api/v1", tags=["trades"], dependencies=[Depends(no_store)])

TRADE_STATUS_PATTERN = "^[a-z_]{1,24}$"


@router.get(
    "/trades",
    response_model=TradePage,
    summary="Recent trades and their status, newest first",
    description=OWN_TRADES
    + " `status` is the trade's latest stage: requested, tweets_fetched, scored, submitting, "
    "included (in a block, outcome not yet read), then succeeded, failed, skipped, rejected, "
    "dry_run, ended (no tweets or no score) or unknown (sent, outcome not yet known).",
    responses=READ_ERRORS,
)
async def list_trades(
    caller: ReaderDep,
    netuid: NetuidQuery = None,
    hotkey: HotkeyQuery = None,
    status: Annotated[
        str | None,
        Query(
            pattern=TRADE_STATUS_PATTERN,
            description="Only trades whose latest status is this one.",
            examples=["succeeded"],
        ),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            pattern=TRADE_CURSOR_PATTERN,
            description="`next_cursor` of the previous page (`<microseconds>.<trade_id>`); "
            "omit it for the first page.",
            examples=[f"1767225600000000.{TRADE_ID_EXAMPLE}"],
        ),
    ] = None,
) -> TradePage:
    after = None if cursor is None else service.parse_trade_cursor(cursor)
    page = Listing.of(caller, netuid=netuid, hotkey=hotkey, limit=limit, cursor=after)
    return await service.list_trades(page, status=status)


@router.get(
    "/trades/{trade_id}",
    response_model=TradeOut,
    summary="A trade's path through every stage",
    description=OWN_TRADES + " Another caller's trade answers 404, like a missing one.",
    responses=documented(
        {
            **COMMON_ERRORS,
            403: "`insufficient_scope`: the token lacks `read`",
            404: "`not_found`: no such trade among those the caller may see",
        }
    ),
)
async def get_trade(
    trade_id: Annotated[
        str,
        Path(
            pattern=TRADE_ID_PATTERN,
            description="A `trade_id` as answered by POST /api/v1/trades or the dividends "
            "endpoint (32 hex characters).",
            examples=[TRADE_ID_EXAMPLE],
        ),
    ],
    caller: ReaderDep,
) -> TradeOut:
    return await service.get_trade(trade_id, owner=visible_owner(caller))


@router.get(
    "/stake_actions",
    response_model=StakeActionPage,
    summary="Stake action history, newest first",
    description=OWN_TRADES,
    responses=READ_ERRORS,
)
async def list_stake_actions(
    page: IdListingDep,
    status: Annotated[
        StakeStatus | None, Query(description="Only actions with this status.")
    ] = None,
    direction: Annotated[
        Literal["add", "remove", "none"] | None,
        Query(description="Only actions of this direction."),
    ] = None,
) -> StakeActionPage:
    return await service.list_stake_actions(page, status=status, direction=direction)


@router.post(
    "/trades",
    response_model=TradeTriggered,
    status_code=202,
    summary="Trigger a trade by hand (same cooldown as the dividends endpoint)",
    description="Scope: `trade`. Without it: 403 `insufficient_scope`, nothing enqueued.",
    responses=documented(
        {
            **COMMON_ERRORS,
            **BODY_ERRORS,
            403: "`insufficient_scope`: the token lacks `trade`",
            422: "`validation_error`: the body is not JSON, or netuid or hotkey is invalid",
            429: "`rate_limited`: the token's rate limit or trade limit, or too many failed "
            "authentications from this address; see Retry-After",
            503: "`redis_unavailable` (trade queue), `database_unavailable` (token store) or "
            "`auth_busy` (too many token checks in progress; see Retry-After)",
        }
    ),
)
async def trigger_trade(
    body: TradeRequest, state: StateDep, caller: TraderDep, request_id: RequestIdDep
) -> TradeTriggered:
    hotkey = hotkey_param(body.hotkey)
    state.limiter.hit(caller.owner, "trade", state.settings.trade_rate_limit_per_min)
    result = await state.trades.request(
        body.netuid, hotkey, source="manual", request_id=request_id, requested_by=caller.owner
    )
    fields = trade_fields(result, body.netuid, hotkey)
    return TradeTriggered(
        trade_id=result.trade_id,
        stake_tx_triggered=result.enqueued,
        trade_status=fields.trade_status,
        trade_detail=fields.trade_detail or "",
    )
