"""The gateway's trade service: the shared trigger behind a per-process cooldown memory."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway.trades.trigger import TradeService
from shared.constants import STREAM_DIVIDEND_REQUESTED
from shared.events import DividendRequested
from shared.trades import TradeTrigger
from tests.fakes.chain import ALICE


async def test_one_trade_per_pair_and_repeats_answered_from_memory(redis: Redis) -> None:
    trades = TradeService(TradeTrigger(redis, cooldown_s=30, maxlen=1000))
    results = await asyncio.gather(
        *(
            trades.request(3, ALICE, source="manual", request_id=f"r{i}", requested_by="o")
            for i in range(20)
        )
    )
    [winner] = [r for r in results if r.enqueued]
    assert {r.trade_id for r in results} == {winner.trade_id}
    assert all(r.cooldown_left_s > 29 for r in results if not r.enqueued)
    [(_, fields)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
    event = DividendRequested.from_fields(fields)
    assert (event.trade_id, event.source, event.requested_by) == (winner.trade_id, "manual", "o")

    await redis.delete(STREAM_DIVIDEND_REQUESTED)  # the cooldown is answered from memory
    again = await trades.request(3, ALICE, source="api", request_id="r", requested_by="o")
    assert again.trade_id == winner.trade_id and not again.enqueued
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0
