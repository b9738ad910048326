from __future__ import annotations

from redis.asyncio import Redis

from shared.bus import publish
from shared.events import DividendRequested


async def test_round_trip_through_a_stream(redis: Redis) -> None:
    event = DividendRequested(
        trade_id="t1", netuid=0, hotkey="5abc", source="schedule", dividend=42
    )
    entry_id = await publish(redis, event, maxlen=1000)
    [(got_id, fields)] = await redis.xrange("stream:dividend_requested")
    assert got_id.decode() == entry_id
    assert fields[b"netuid"] == b"0" and fields[b"source"] == b"schedule"
    assert b"unit" not in fields  # unset optional fields are left out
    back = DividendRequested.from_fields(fields)
    assert back == event
