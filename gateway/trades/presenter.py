"""The trade part of a response: shared by the dividends router, its cache-hit fast path
and POST /api/v1/trades."""

from __future__ import annotations

from gateway.trades.schemas import TradeFields
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
