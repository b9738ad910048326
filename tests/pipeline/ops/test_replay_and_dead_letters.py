"""Replay never stakes twice; --as-new-trade stakes once more; a requeued dead letter
completes once. Real Redis, PostgreSQL and stage worker; fakes at the edges."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from pipeline.ops import deadletters
from pipeline.ops.replay import ReplayError, plan_range, plan_trade, publish_plan
from shared import signing
from shared.bus import publish
from shared.constants import (
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
)
from shared.db.models import StakeAction, Trade
from shared.events import DeadLetter, DividendRequested
from shared.ids import new_id, utcnow
from shared.settings import Settings
from shared.trades import TradeTrigger, cooldown_key
from tests.fakes import Reply
from tests.fakes.chain import ALICE
from tests.fakes.datura import FakeDatura
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import eventually, running_worker


async def _settled(trade_id: str) -> StakeAction | None:
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status not in {"submitting", "unknown"} else None


async def _executed_count(redis: Redis) -> int:
    return int(await redis.xlen(STREAM_STAKE_EXECUTED))


async def test_replay_of_a_completed_trade_and_as_new_trade(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    trade_id = new_id()
    # A new trade respects the cooldown (at enqueue and again at execution): keep it short.
    settings = pipeline_settings.model_copy(update={"trade_cooldown_s": 1})
    async with running_worker(settings, staker):
        await publish(
            redis,
            DividendRequested(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api"),
            maxlen=1000,
        )
        await eventually(lambda: _settled(trade_id))
        assert len(staker.extrinsics) == 1

        plan = await plan_trade(redis, trade_id, new_trade=False)
        assert [f["trade_id"] for _, f in plan] == [trade_id]
        assert plan[0][1]["source"] == "replay"
        await publish_plan(redis, plan, maxlen=1000, cooldown_s=300)

        async def replayed() -> bool:
            return await _executed_count(redis) == 2

        await eventually(replayed)
        assert len(staker.extrinsics) == 1  # the replay changed nothing on chain
        [_, (_, again)] = await redis.xrange(STREAM_STAKE_EXECUTED)
        assert b"already executed" in again[b"reason"] and again[b"source"] == b"replay"

        fresh = await plan_trade(redis, trade_id, new_trade=True)
        new_trade_id = fresh[0][1]["trade_id"]
        assert new_trade_id != trade_id
        await asyncio.sleep(1.1)  # past the first trade's cooldown
        await publish_plan(redis, fresh, maxlen=1000, cooldown_s=1)
        await eventually(lambda: _settled(new_trade_id))
    assert len(staker.extrinsics) == 2
    new_trade = await Trade.get(trade_id=new_trade_id)
    assert new_trade.replay_of == trade_id and new_trade.source == "replay"


async def test_a_replay_keeps_the_requests_age_a_new_trade_starts_now(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """A request that never got its trade row (its tweets stage failed for good), replayed
    hours later, is as old as the request: MAX_EVENT_AGE_S still skips it. Only
    --as-new-trade (a new request, through the cooldown) trades now."""
    requested_at = utcnow() - timedelta(hours=3)
    old = DividendRequested(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    old = old.model_copy(update={"occurred_at": requested_at})
    first = await publish(redis, old, maxlen=1000)
    plan = await plan_trade(redis, old.trade_id, new_trade=False)
    fresh = await plan_trade(redis, old.trade_id, new_trade=True)
    assert plan[0][1]["occurred_at"] == old.to_fields()["occurred_at"]
    assert fresh[0][1]["occurred_at"] != old.to_fields()["occurred_at"]
    await redis.xdel(STREAM_DIVIDEND_REQUESTED, first)  # the request itself was never handled
    staker = FakeStaker()
    async with running_worker(pipeline_settings, staker):
        await publish_plan(redis, plan, maxlen=1000, cooldown_s=300)

        action = await eventually(lambda: _settled(old.trade_id))
    assert staker.extrinsics == []
    assert action.status == "skipped" and "stale" in (action.reason or "")
    assert (await Trade.get(trade_id=old.trade_id)).created_at == requested_at


async def test_a_replay_from_the_trade_row_keeps_its_request_time(orm: str, redis: Redis) -> None:
    requested_at = utcnow() - timedelta(hours=1)
    await Trade.create(
        trade_id="t-row", netuid=3, hotkey=ALICE, source="api", created_at=requested_at
    )
    await Trade.filter(trade_id="t-row").update(created_at=requested_at)  # not auto_now_add
    [(_, fields)] = await plan_trade(redis, "t-row", new_trade=False)
    assert DividendRequested.from_fields(fields).occurred_at == requested_at


async def test_replay_range_and_dry_run_inputs(orm: str, redis: Redis) -> None:
    with pytest.raises(ReplayError):
        await plan_trade(redis, "missing", new_trade=False)
    with pytest.raises(ReplayError):
        await plan_range(redis, "stream:nope", "-", "+", new_trade=False)
    event = DividendRequested(trade_id="t-range", netuid=1, hotkey=ALICE, source="api")
    first = await publish(redis, event, maxlen=100)
    plan = await plan_range(redis, event.stream, first, "+", new_trade=False)
    assert len(plan) == 1 and plan[0][1]["replay_of"] == "t-range"


async def test_requeued_dead_letter_completes_once(
    orm: str, redis: Redis, pipeline_settings: Settings, datura: FakeDatura
) -> None:
    staker = FakeStaker()
    settings = pipeline_settings.model_copy(update={"http_max_retries": 0})
    # A broken reply (not an outage, which is waited out): three failed deliveries.
    datura.script(*[Reply(body={"unexpected": True})] * 3)
    trade_id = new_id()
    async with running_worker(settings, staker):
        await publish(
            redis,
            DividendRequested(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api"),
            maxlen=1000,
        )

        async def dead() -> list[deadletters.Letter]:
            return await deadletters.list_letters(redis)

        [letter] = await eventually(dead)
        assert letter.event is not None and letter.event.trade_id == trade_id
        assert letter.event.from_stream == "stream:dividend_requested"
        await deadletters.requeue(redis, letter.id, maxlen=1000)
        assert await redis.xlen(STREAM_DEAD_LETTER) == 0
        action = await eventually(lambda: _settled(trade_id))
    assert action.status == "succeeded" and len(staker.extrinsics) == 1


async def test_purge_and_durations(redis: Redis) -> None:
    await redis.xadd(STREAM_DEAD_LETTER, {"error": "old"}, id="1000-0")
    await redis.xadd(STREAM_DEAD_LETTER, {"error": "new"})
    assert await deadletters.purge(redis, deadletters.parse_duration("1h")) == 1
    assert [letter.fields["error"] for letter in await deadletters.list_letters(redis)] == ["new"]
    assert deadletters.parse_duration("7d") == 604800
    with pytest.raises(deadletters.DeadLetterError):
        deadletters.parse_duration("soon")
    with pytest.raises(deadletters.DeadLetterError):
        await deadletters.get_letter(redis, "1-0")


async def test_range_as_new_trade_makes_one_trade_per_original(orm: str, redis: Redis) -> None:
    event = DividendRequested(trade_id="dup", netuid=1, hotkey=ALICE, source="api")
    first = await publish(redis, event, maxlen=100)
    await publish(redis, event, maxlen=100)  # the same trade's event, published twice
    plan = await plan_range(redis, event.stream, first, "+", new_trade=True)
    assert len(plan) == 1 and plan[0][1]["trade_id"] != "dup"
    same = await plan_range(redis, event.stream, first, "+", new_trade=False)
    assert len(same) == 2


async def test_as_new_trade_inside_the_cooldown_is_refused(orm: str, redis: Redis) -> None:
    trigger = TradeTrigger(redis, cooldown_s=300, maxlen=1000)
    original = DividendRequested(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    assert (await trigger.trigger(original)).enqueued
    plan = await plan_trade(redis, original.trade_id, new_trade=True)
    with pytest.raises(ReplayError, match="inside its trade cooldown"):
        await publish_plan(redis, plan, maxlen=1000, cooldown_s=300)
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1  # nothing new was published
    assert (await redis.get(cooldown_key(3, ALICE))).decode() == original.trade_id

    await redis.delete(cooldown_key(3, ALICE))  # the cooldown has passed
    [entry_id] = await publish_plan(redis, plan, maxlen=1000, cooldown_s=300)
    new_trade_id = plan[0][1]["trade_id"]
    assert (await redis.get(cooldown_key(3, ALICE))).decode() == new_trade_id  # reserved
    [(_, raw)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED, min=entry_id, max=entry_id)
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    signing.verify(fields)  # re-signed, since source/trade_id/event_id changed
    assert (fields["source"], fields["replay_of"]) == ("replay", original.trade_id)


async def test_replays_are_resigned_and_forged_entries_never_replayed(
    orm: str, redis: Redis
) -> None:
    event = DividendRequested(trade_id="signed", netuid=1, hotkey=ALICE, source="api")
    first = await publish(redis, event, maxlen=100)
    forged = DividendRequested(trade_id="forged", netuid=1, hotkey=ALICE, source="api")
    await redis.xadd(
        STREAM_DIVIDEND_REQUESTED, signing.sign(forged.to_fields(), key=b"not-the-key-000000")
    )
    plan = await plan_range(redis, event.stream, first, "+", new_trade=False)
    assert [f["replay_of"] for _, f in plan] == ["signed"]
    signing.verify(plan[0][1])
    assert plan[0][1]["sig"] != event.to_fields()["sig"]
    with pytest.raises(ReplayError, match="no trade forged"):
        await plan_trade(redis, "forged", new_trade=False)  # not laundered into a signed entry
    with pytest.raises(ReplayError, match="--as-new-trade starts from the request"):
        await plan_range(redis, STREAM_SENTIMENT_SCORED, "-", "+", new_trade=True)


async def test_requeue_keeps_the_signature_and_refuses_forgeries(redis: Redis) -> None:
    original = DividendRequested(trade_id="t-dl", netuid=3, hotkey=ALICE, source="api").to_fields()
    unsigned = {k: v for k, v in original.items() if k != "sig"}
    good, bad = [  # signed letters, as the worker writes them
        await redis.xadd(STREAM_DEAD_LETTER, dead.to_fields())  # type: ignore[arg-type]
        for dead in (
            DeadLetter.of(STREAM_DIVIDEND_REQUESTED, "tweets", "1-0", f, deliveries=3, error="x")
            for f in (original, unsigned)
        )
    ]
    with pytest.raises(deadletters.DeadLetterError, match="unsigned or badly signed"):
        await deadletters.requeue(redis, bad.decode(), maxlen=100)
    new_id_ = await deadletters.requeue(redis, good.decode(), maxlen=100)
    [(_, raw)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED, min=new_id_, max=new_id_)
    assert {k.decode(): v.decode() for k, v in raw.items()} == original  # untouched, still valid
    assert await redis.xlen(STREAM_DEAD_LETTER) == 1  # the forged one stays for inspection
