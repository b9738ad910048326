"""The stake stage's idempotency and reconciliation, and the sizing rules."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from pipeline.stages.decision import alpha_for_tao, decide
from shared.bus import publish
from shared.constants import STREAM_STAKE_EXECUTED
from shared.db.models import StakeAction
from shared.events import SentimentScored
from shared.ids import new_id
from shared.settings import Settings
from tests.conftest import make_settings
from tests.fakes.chain import ALICE
from tests.fakes.staker import COLDKEY, FakeStaker
from tests.pipeline.conftest import eventually, running_worker


def _scored(trade_id: str, score: int = 50) -> SentimentScored:
    return SentimentScored(
        trade_id=trade_id, netuid=3, hotkey=ALICE, source="api", score=score, backend="llm"
    )


async def _settled(trade_id: str) -> StakeAction | None:
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status not in {"submitting", "unknown"} else None


async def test_duplicate_entries_on_two_consumers_submit_once(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.delay_s = 0.1  # both consumers are inside the stage at the same time
    trade_id = new_id()
    for _ in range(2):
        await publish(redis, _scored(trade_id), maxlen=1000)
    async with (
        running_worker(pipeline_settings, staker, stages=("stake",), consumer="a"),
        running_worker(pipeline_settings, staker, stages=("stake",), consumer="b"),
    ):
        await eventually(lambda: _settled(trade_id))

        async def both_handled() -> bool:
            groups = await redis.xinfo_groups("stream:sentiment_scored")
            return groups[0]["pending"] == 0 and groups[0]["entries-read"] == 2

        await eventually(both_handled)
    assert len(staker.extrinsics) == 1
    # The other consumer met the row mid-submission (left it alone) or after it settled
    # ("already executed"): one or two announcements, all of the one outcome.
    announced = [f for _, f in await redis.xrange(STREAM_STAKE_EXECUTED)]
    assert 1 <= len(announced) <= 2
    assert {f[b"status"] for f in announced} == {b"succeeded"}


async def test_replayed_trade_is_already_executed(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, _scored(trade_id), maxlen=1000)
        await eventually(lambda: _settled(trade_id))
        await publish(redis, _scored(trade_id, score=-80), maxlen=1000)

        async def two() -> bool:
            return len(await redis.xrange(STREAM_STAKE_EXECUTED)) == 2

        await eventually(two)
    assert len(staker.extrinsics) == 1
    action = await StakeAction.get(trade_id=trade_id)
    assert action.direction == "add"  # the replay's different score changed nothing


async def test_unknown_outcome_is_reconciled_not_resubmitted(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.lose_next = True  # applied on chain, then the answer is lost
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, _scored(trade_id), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    assert len(staker.extrinsics) == 1
    assert action.status == "succeeded" and "reconciled from chain state" in (action.reason or "")


async def test_never_included_is_failed_after_its_era(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    trade_id = new_id()
    await publish(redis, _scored(trade_id), maxlen=1000)
    # A crash right after the row was written, before anything reached the chain:
    from shared.db.models import Trade

    trade = await Trade.create(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api")
    await StakeAction.create(
        trade=trade,
        netuid=3,
        hotkey=ALICE,
        direction="add",
        status="submitting",
        nonce_before=0,
        block_before=100,
        stake_before_rao=0,
        coldkey=COLDKEY,
    )
    staker.block = 300  # far past the era of a transaction signed at block 100
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        action = await eventually(lambda: _settled(trade_id))
    assert action.status == "failed" and "never included" in (action.reason or "")
    assert staker.extrinsics == []


async def test_reconciler_leaves_other_coldkeys_rows_alone(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    from shared.db.models import Trade

    trade = await Trade.create(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    await StakeAction.create(
        trade=trade,
        netuid=3,
        hotkey=ALICE,
        direction="add",
        status="unknown",
        nonce_before=0,
        block_before=1,
        stake_before_rao=0,
        coldkey="5SomeOtherColdkey",
    )
    staker = FakeStaker()
    staker.nonce, staker.block = 7, 10_000  # would "prove" anything for its own rows
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await asyncio.sleep(0.6)
    row = await StakeAction.get(trade_id=trade.trade_id)
    assert row.status == "unknown"


@pytest.mark.parametrize(
    ("score", "sizing", "direction", "rao"),
    [
        (50, "fixed", "add", 1_000_000_000),
        (-1, "fixed", "remove", 1_000_000_000),
        (0, "fixed", "none", 0),
        (None, "fixed", "none", 0),
        (50, "proportional", "add", 500_000_000),
        (-100, "proportional", "remove", 1_000_000_000),
        (150, "proportional", "add", 1_000_000_000),
    ],
)
def test_decide(score: int | None, sizing: str, direction: str, rao: int) -> None:
    settings = make_settings(
        "redis://x",
        "sqlite://:memory:",
        stake_sizing=sizing,
        stake_amount_tao=1.0,
        stake_max_tao=1.0,
    )
    decision = decide(score, settings)
    assert (decision.direction, decision.amount_rao) == (direction, rao)


def test_amount_is_capped() -> None:
    settings = make_settings(
        "redis://x", "sqlite://:memory:", stake_amount_tao=5.0, stake_max_tao=2.0
    )
    decision = decide(10, settings)
    assert decision.amount_rao == 2_000_000_000 and "capped" in decision.reason


def test_alpha_conversion() -> None:
    assert alpha_for_tao(1_000_000_000, 500_000_000) == 2_000_000_000
    assert alpha_for_tao(1_000_000_000, 1_000_000_000) == 1_000_000_000
    with pytest.raises(ValueError):
        alpha_for_tao(1, 0)


async def test_lock_serializes_one_coldkey(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.delay_s = 0.05
    active = 0
    peak = 0
    original = staker.add_stake

    async def counting(netuid: int, hotkey: str, amount: int):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            return await original(netuid, hotkey, amount)
        finally:
            active -= 1

    staker.add_stake = counting  # type: ignore[method-assign]
    ids = [new_id() for _ in range(5)]
    for trade_id in ids:
        await publish(redis, _scored(trade_id), maxlen=1000)
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        for trade_id in ids:
            await eventually(lambda t=trade_id: _settled(t))  # type: ignore[misc]
    assert peak == 1 and len(staker.extrinsics) == 5


async def test_emissions_alone_do_not_pass_for_an_applied_add(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    from decimal import Decimal

    from shared.db.models import Trade

    staker = FakeStaker()
    trade = await Trade.create(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    await StakeAction.create(
        trade=trade,
        netuid=3,
        hotkey=ALICE,
        direction="add",
        status="unknown",
        nonce_before=0,
        block_before=100,
        stake_before_rao=5_000_000_000,
        amount_tao=Decimal(1),
        coldkey=COLDKEY,
    )
    staker.nonce = 1  # some extrinsic of this coldkey went in ...
    staker.stakes[(3, ALICE)] = 5_000_000_000 + 10_000_000  # ... but only emissions arrived
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        action = await eventually(lambda: _settled(trade.trade_id))
    assert action.status == "failed" and action.success is False
