"""Builds the response bodies (serialized once per answer by gateway.dividends.cache).

The trade fields come from gateway.trades.presenter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.dividends.schemas import DividendCollectionResponse, DividendOut, DividendResponse
from gateway.trades.schemas import TradeFields

if TYPE_CHECKING:
    from gateway.dividends.cache import DividendsView


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
