"""`python -m pipeline streams` on a seeded Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from pipeline.ops.streams import report, stream_rows
from shared.constants import STREAM_DEAD_LETTER, STREAM_DIVIDEND_REQUESTED


async def test_inspection_of_a_seeded_redis(redis: Redis) -> None:
    ids = [await redis.xadd(STREAM_DIVIDEND_REQUESTED, {"n": str(i)}) for i in range(5)]
    await redis.xgroup_create(STREAM_DIVIDEND_REQUESTED, "tweets", id="0")
    await redis.xreadgroup("tweets", "worker-a", {STREAM_DIVIDEND_REQUESTED: ">"}, count=2)
    await asyncio.sleep(0.05)
    await redis.xadd(STREAM_DEAD_LETTER, {"error": "boom"})
    rows = {(r.stream, r.group): r for r in await stream_rows(redis)}
    row = rows[(STREAM_DIVIDEND_REQUESTED, "tweets")]
    assert (row.length, row.consumers, row.pending, row.lag) == (5, 1, 2, 3)
    assert row.last_id == ids[-1].decode()
    assert row.oldest_pending_idle_s is not None and row.oldest_pending_idle_s >= 0.04
    assert rows[("stream:tweets_fetched", "sentiment")].length == 0
    text = await report(redis)
    assert "stream:dividend_requested" in text and "dead letters: 1" in text
    line = next(x for x in text.splitlines() if x.startswith("stream:dividend_requested"))
    assert line.split()[:7] == [
        "stream:dividend_requested",
        "5",
        ids[-1].decode(),
        "tweets",
        "1",
        "2",
        "3",
    ]
