"""The atomic cooldown reservation + publish script."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from shared.constants import KEY_TRADED_PAIRS, STREAM_DIVIDEND_REQUESTED
from shared.events import DividendRequested
from shared.trades import TradeTrigger, cooldown_key


def _event(trade_id: str) -> DividendRequested:
    return DividendRequested(trade_id=trade_id, netuid=5, hotkey="hk", source="api")


async def test_one_winner_among_concurrent_triggers(redis: Redis) -> None:
    trigger = TradeTrigger(redis, cooldown_s=30, maxlen=1000)
    results = await asyncio.gather(*(trigger.trigger(_event(f"t{i}")) for i in range(50)))
    winners = [r for r in results if r.enqueued]
    assert len(winners) == 1
    assert {r.trade_id for r in results} == {winners[0].trade_id}
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1
    assert 29_000 < await redis.pttl(cooldown_key(5, "hk")) <= 30_000
    assert await redis.zscore(KEY_TRADED_PAIRS, "5:hk") is not None
    loser = next(r for r in results if not r.enqueued)
    assert 29 < loser.cooldown_left_s <= 30
