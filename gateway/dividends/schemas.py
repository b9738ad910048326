"""Response models of /api/v1/tao_dividends (field names fixed by the design)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.trades.schemas import TradeFields


class DividendOut(BaseModel):
    netuid: int
    hotkey: str
    dividend: int = Field(description="Amount in the smallest unit (rao) of `unit`.")
    unit: str = Field(description="`tao_rao` (TaoDividendsPerSubnet) or `alpha_rao`.")
    storage: str = Field(description="The SubtensorModule storage item that was read.")


class DividendResponse(DividendOut, TradeFields):
    cached: bool
    block: int

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "netuid": 18,
                    "hotkey": "5FFApaS75bv5pJHfAp2FVLBj9ZaXuFDjEypsaBNc1wCfe52v",
                    "dividend": 123456789,
                    "unit": "tao_rao",
                    "storage": "TaoDividendsPerSubnet",
                    "cached": False,
                    "block": 4520311,
                    "stake_tx_triggered": True,
                    "trade_id": "3f9c2b8e0d4a4c55a1f0e6b7c8d9e0f1",
                    "trade_status": "enqueued",
                    "trade_detail": "trade enqueued for netuid 18",
                }
            ]
        }
    }


class DividendCollectionResponse(TradeFields):
    dividends: list[DividendOut]
    count: int
    cached: bool
    block: int
    unit: str
    storage: str
