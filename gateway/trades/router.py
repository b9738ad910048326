"""GET /api/v1/trades/{trade_id}, GET /api/v1/stake_actions, POST /api/v1/trades."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gateway.deps import CallerDep, RequestIdDep, StateDep, hotkey_param
from gateway.dividends.presenter import trade_fields
from gateway.trades import service
from gateway.trades.schemas import StakeActionPage, TradeOut, TradeRequest, TradeTriggered
from shared.errors import InvalidInput
from shared.events import DividendRequested
from shared.ids import new_id

router = APIRouter(prefix="/api/v1", tags=["trades"])


@router.get(
    "/trades/{trade_id}", response_model=TradeOut, summary="A trade's path through every stage"
)
async def get_trade(trade_id: str, caller: CallerDep) -> TradeOut:
    return await service.get_trade(trade_id)


@router.get(
    "/stake_actions", response_model=StakeActionPage, summary="Stake action history, newest first"
)
async def stake_actions(
    caller: CallerDep,
    netuid: Annotated[int | None, Query(ge=0, le=65535)] = None,
    hotkey: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[
        Literal["succeeded", "failed", "skipped", "dry_run", "submitting", "unknown"] | None,
        Query(),
    ] = None,
    direction: Annotated[Literal["add", "remove", "none"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> StakeActionPage:
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    if cursor is not None and not cursor.isdigit():
        raise InvalidInput("cursor: not a cursor returned by this endpoint")
    return await service.list_stake_actions(
        netuid=netuid,
        hotkey=hotkey,
        status=status,
        direction=direction,
        limit=limit,
        cursor=None if cursor is None else int(cursor),
    )


@router.post(
    "/trades",
    response_model=TradeTriggered,
    status_code=202,
    summary="Trigger a trade by hand (same cooldown as the dividends endpoint)",
)
async def trigger_trade(
    body: TradeRequest, state: StateDep, caller: CallerDep, request_id: RequestIdDep
) -> TradeTriggered:
    hotkey = hotkey_param(body.hotkey)
    state.limiter.hit(caller.token_hash[:16], "trade", state.settings.trade_rate_limit_per_min)
    event = DividendRequested(
        trade_id=new_id(),
        netuid=body.netuid,
        hotkey=hotkey,
        source="manual",
        request_id=request_id,
        requested_by=caller.name,
    )
    result = await state.trades.trigger(event)
    fields = trade_fields(result, body.netuid, hotkey)
    return TradeTriggered(
        trade_id=result.trade_id,
        stake_tx_triggered=result.enqueued,
        trade_status=fields.trade_status,
        trade_detail=fields.trade_detail or "",
    )
