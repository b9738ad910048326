"""A requeued dead letter goes back only to the event stream its (signed) entry belongs on.

Only a letter signed with the key is requeued (tests/pipeline/ops/test_deadletters.py), yet an
old letter, or one written by a holder of the key, may name any key as where its genuine
signed entry goes back to.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from pipeline.ops import deadletters
from shared.constants import STREAM_DEAD_LETTER, STREAM_DIVIDEND_REQUESTED, STREAM_SENTIMENT_SCORED
from shared.events import DeadLetter, DividendRequested
from tests.fakes.chain import ALICE


async def letter(redis: Redis, stream: str) -> str:
    signed = DividendRequested(trade_id="t-1", netuid=3, hotkey=ALICE, source="api").to_fields()
    dead = DeadLetter.of(stream, "tweets", "1-0", signed, deliveries=3, error="x")
    entry_id = await redis.xadd(STREAM_DEAD_LETTER, dead.to_fields())  # type: ignore[arg-type]
    return entry_id.decode()


@pytest.mark.parametrize(
    "target",
    ["ratelimit:read:victim:1", "cache:dividends:3", STREAM_DEAD_LETTER, "stream:other"],
)
async def test_a_letter_naming_a_key_that_is_not_an_event_stream_is_refused(
    redis: Redis, target: str
) -> None:
    entry_id = await letter(redis, target)
    with pytest.raises(deadletters.DeadLetterError, match="not an event stream"):
        await deadletters.requeue(redis, entry_id, maxlen=100)
    assert await redis.xlen(STREAM_DEAD_LETTER) == 1  # kept, untouched
    if target != STREAM_DEAD_LETTER:
        assert not await redis.exists(target)


async def test_an_entry_is_never_moved_to_another_event_stream(redis: Redis) -> None:
    entry_id = await letter(redis, STREAM_SENTIMENT_SCORED)
    with pytest.raises(deadletters.DeadLetterError, match="does not belong on"):
        await deadletters.requeue(redis, entry_id, maxlen=100)
    assert not await redis.exists(STREAM_SENTIMENT_SCORED)


async def test_its_own_stream_is_accepted(redis: Redis) -> None:
    entry_id = await letter(redis, STREAM_DIVIDEND_REQUESTED)
    await deadletters.requeue(redis, entry_id, maxlen=100)
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1
    assert await redis.xlen(STREAM_DEAD_LETTER) == 0
