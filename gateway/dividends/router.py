"""GET /api/v1/tao_dividends: validation, auth, cache, and the trade trigger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.deps import CallerDep, RequestIdDep, StateDep
from gateway.dividends.schemas import (
    DividendCollectionResponse,
    DividendOut,
    DividendResponse,
    TradeFields,
)
from gateway.dividends.service import DividendsView
from shared.errors import AppError
from shared.ss58 import is_valid_ss58

router = APIRouter(prefix="/api/v1", tags=["dividends"])

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing, malformed, unknown or revoked token"},
    422: {"description": "Invalid netuid or hotkey"},
    429: {"description": "Rate limit reached (see Retry-After)"},
    503: {"description": "Redis or the chain cannot answer"},
    504: {"description": "The chain did not answer in time"},
}


class InvalidHotkey(AppError):
    status = 422
    code = "validation_error"


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
    if hotkey is not None and not is_valid_ss58(hotkey):
        raise InvalidHotkey("hotkey: not a valid SS58 address (bad characters, length or checksum)")
    settings = state.settings
    do_trade = settings.trade_by_default if trade is None else trade
    if do_trade:
        state.limiter.hit(caller.token_hash[:16], "trade", settings.trade_rate_limit_per_min)

    view = await state.dividends.lookup(netuid, hotkey)
    trade_fields = TradeFields(stake_tx_triggered=False)
    if do_trade:
        trade_netuid = settings.default_netuid if netuid is None else netuid
        trade_hotkey = hotkey or settings.default_hotkey
        result = await state.trades.request(
            trade_netuid, trade_hotkey, request_id=request_id, requested_by=caller.name, view=view
        )
        pair = f"netuid {trade_netuid} hotkey {trade_hotkey}"
        trade_fields = TradeFields(
            stake_tx_triggered=result.enqueued,
            trade_id=result.trade_id,
            trade_status="enqueued" if result.enqueued else "cooldown",
            trade_detail=(
                f"trade enqueued for {pair}"
                if result.enqueued
                else f"a trade for {pair} is already enqueued; the cooldown ends in "
                f"{result.cooldown_left_s:.0f}s"
            ),
        )
    return _response(netuid, hotkey, view, trade_fields)


def _response(
    netuid: int | None, hotkey: str | None, view: DividendsView, trade: TradeFields
) -> DividendResponse | DividendCollectionResponse:
    if netuid is not None and hotkey is not None:
        dividend = view.entries[0][2] if view.entries else 0
        return DividendResponse(
            netuid=netuid,
            hotkey=hotkey,
            dividend=dividend,
            unit=view.unit,
            storage=view.storage,
            cached=view.cached,
            block=view.block,
            **trade.model_dump(),
        )
    items = [
        DividendOut(netuid=n, hotkey=h, dividend=d, unit=view.unit, storage=view.storage)
        for n, h, d in view.entries
    ]
    return DividendCollectionResponse(
        dividends=items,
        count=len(items),
        cached=view.cached,
        block=view.block,
        unit=view.unit,
        storage=view.storage,
        **trade.model_dump(),
    )
