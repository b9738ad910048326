"""GET /api/v1/trades, GET /api/v1/trades/{trade_id}, GET /api/v1/stake_actions,
POST /api/v1/trades."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from gateway.deps import (
    SS58_CONSTRAINTS,
    SS58_DESCRIPTION,
    SS58_EXAMPLE,
    ReaderDep,
    RequestIdDep,
    StateDep,
    TraderDep,
    hotkey_param,
)
from gateway.errors import BODY_ERRORS, documented
from gateway.headers import no_store
from gateway.scopes import ADMIN
from gateway.trades import service
from gateway.trades.presenter import trade_fields
from gateway.trades.schemas import (
    TRADE_CURSOR_PATTERN,
    TRADE_ID_EXAMPLE,
    TRADE_ID_PATTERN,
    StakeActionPage,
    TradeOut,
    TradePage,
    TradeRequest,
    TradeTriggered,
)

router = APIRouter(prefix="/api/v1", tags=["trades"], dependencies=[Depends(no_store)])

COMMON_ERRORS = {
    401: "`unauthorized`: missing, malformed, unknown or revoked token",
    422: "`validation_error`: an invalid parameter or body field (the message names it)",
    429: "`rate_limited`: the token's rate limit, or too many failed authentications from "
    "this address; see Retry-After",
    503: "`database_unavailable` or `redis_unavailable`: a dependency cannot answer; "
    "`auth_busy`: too many token checks in progress (see Retry-After)",
}
CURSOR_PATTERN = "^[0-9]{1,10}$"
TRADE_STATUS_PATTERN = "^[a-z_]{1,24}$"
MAX_ROW_ID = 2**31 - 1  # stake_actions.id is a 32-bit integer: no row lies beyond it
OWN_TRADES = (
    "Scope: `read`. Only the caller's own trades (those it requested); "
    "every caller's with `admin` as well."
)


@router.get(
    "/trades",
    response_model=TradePage,
    summary="Recent trades and their status, newest first",
    description=OWN_TRADES
    + " `status` is the trade's latest stage: requested, tweets_fetched, scored, submitting, "
    "included (in a block, outcome not yet read), then succeeded, failed, skipped, rejected, "
    "dry_run, ended (no tweets or no score) or unknown (sent, outcome not yet known).",
    responses=documented({**COMMON_ERRORS, 403: "`insufficient_scope`: the token lacks `read`"}),
)
async def list_trades(
    caller: ReaderDep,
    netuid: Annotated[int | None, Query(ge=0, le=65535, description="Subnet id.")] = None,
    hotkey: Annotated[
        str | None,
        Query(
            description=f"Hotkey. {SS58_DESCRIPTION}", examples=[SS58_EXAMPLE], **SS58_CONSTRAINTS
        ),
    ] = None,
    status: Annotated[
        str | None,
        Query(
            pattern=TRADE_STATUS_PATTERN,
            description="Only trades whose latest status is this one.",
            examples=["succeeded"],
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
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
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    return await service.list_trades(
        owner=None if ADMIN in caller.scopes else caller.owner,
        netuid=netuid,
        hotkey=hotkey,
        status=status,
        limit=limit,
        cursor=None if cursor is None else service.parse_trade_cursor(cursor),
    )


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
    owner = None if ADMIN in caller.scopes else caller.owner
    return await service.get_trade(trade_id, owner=owner)


@router.get(
    "/stake_actions",
    response_model=StakeActionPage,
    summary="Stake action history, newest first",
    description=OWN_TRADES,
    responses=documented({**COMMON_ERRORS, 403: "`insufficient_scope`: the token lacks `read`"}),
)
async def stake_actions(
    caller: ReaderDep,
    netuid: Annotated[int | None, Query(ge=0, le=65535, description="Subnet id.")] = None,
    hotkey: Annotated[
        str | None,
        Query(
            description=f"Hotkey. {SS58_DESCRIPTION}", examples=[SS58_EXAMPLE], **SS58_CONSTRAINTS
        ),
    ] = None,
    status: Annotated[
        Literal[
            "succeeded",
            "failed",
            "skipped",
            "rejected",
            "dry_run",
            "submitting",
            "unknown",
            "included",
        ]
        | None,
        Query(description="Only actions with this status."),
    ] = None,
    direction: Annotated[
        Literal["add", "remove", "none"] | None,
        Query(description="Only actions of this direction."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page (a decimal number); omit it for "
            "the first page.",
            examples=["1234"],
        ),
    ] = None,
) -> StakeActionPage:
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    after = None if cursor is None else int(cursor)
    if after is not None and after > MAX_ROW_ID:
        after = None  # every row id is below it: the same page as no cursor
    return await service.list_stake_actions(
        owner=None if ADMIN in caller.scopes else caller.owner,
        netuid=netuid,
        hotkey=hotkey,
        status=status,
        direction=direction,
        limit=limit,
        cursor=after,
    )


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
