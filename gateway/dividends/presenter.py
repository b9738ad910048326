"""Builds the response bodies; shared by the router and the cache-hit fast path."""

from __future__ import annotations

from gateway.dividends.schemas import (
    DividendCollectionResponse,
    DividendOut,
    DividendResponse,
    TradeFields,
)
from gateway.dividends.service import DividendsView
from shared.trades import TriggerResult


def trade_fields(result: TriggerResult | None, netuid: int, hotkey: str) -> TradeFields:
    if result is None:
        return TradeFields(stake_tx_triggered=False)
    pair = f"netuid {netuid} hotkey {hotkey}"
    return TradeFields(
        stake_tx_triggered=result.enqueued,
        trade_id=result.trade_id,
        trade_status="enqueued" if result.enqueued else "cooldown",
        trade_detail=(
            f"trade enqueued for {pair}"
            if result.enqueued
            else f"a trade for {pair} is already enqueued; its cooldown ends in "
            f"{result.cooldown_left_s:.0f}s"
        ),
    )


def dividends_body(
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
