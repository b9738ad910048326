"""The stake stage's idempotency and reconciliation, and the sizing rules."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.stages.decision import alpha_for_tao, decide
from shared.bus import publish
from shared.chain.staking_types import SignedStake, StakeOutcome
from shared.constants import STREAM_DEAD_LETTER, STREAM_SENTIMENT_SCORED, STREAM_STAKE_EXECUTED
from shared.db.models import SentimentScore, StakeAction, Trade
from shared.events import DividendRequested, SentimentScored, Source
from shared.ids import new_id, utcnow
from shared.settings import Settings
from tests.conftest import make_settings
from tests.fakes.chain import ALICE, BOB
from tests.fakes.staker import COLDKEY, FakeStaker
from tests.pipeline.conftest import eventually, running_worker
from tests.pipeline.stored import stored_scored


def _scored(trade_id: str, score: int = 50) -> SentimentScored:
    return SentimentScored(
        trade_id=trade_id, netuid=3, hotkey=ALICE, source="api", score=score, backend="llm"
    )


async def _stored(trade_id: str, score: int = 50, *, netuid: int = 3) -> SentimentScored:
    """The rows the earlier stages store, and the event that describes them."""
    return await stored_scored(trade_id, score, netuid=netuid)


async def _settled(trade_id: str) -> StakeAction | None:
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status not in {"submitting", "unknown"} else None


async def test_duplicate_entries_on_two_consumers_submit_once(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.delay_s = 0.1  # both consumers are inside the stage at the same time
    trade_id = new_id()
    event = await _stored(trade_id)
    for _ in range(2):
        await publish(redis, event, maxlen=1000)
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
        await publish(redis, await _stored(trade_id), maxlen=1000)
        await eventually(lambda: _settled(trade_id))
        await publish(redis, _scored(trade_id, score=-80), maxlen=1000)

        async def two() -> bool:
            return len(await redis.xrange(STREAM_STAKE_EXECUTED)) == 2

        await eventually(two)
    assert len(staker.extrinsics) == 1
    action = await StakeAction.get(trade_id=trade_id)
    assert action.direction == "add"  # the replay's different score changed nothing


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
    original = staker.submit

    async def counting(signed: SignedStake) -> StakeOutcome:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            return await original(signed)
        finally:
            active -= 1

    staker.submit = counting  # type: ignore[method-assign]
    ids = [new_id() for _ in range(5)]
    # Five pairs: one pair's second trade would meet the cooldown instead of the lock.
    for netuid, trade_id in enumerate(ids, start=3):
        await publish(redis, await _stored(trade_id, netuid=netuid), maxlen=1000)
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        for trade_id in ids:
            await eventually(lambda t=trade_id: _settled(t))  # type: ignore[misc]
    assert peak == 1 and len(staker.extrinsics) == 5


# ---------------------------------------------------------------- acting on stored state
def _entries(raw: list[Any], trade_id: str) -> list[dict[str, str]]:
    out = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in raw]
    return [e for e in out if e.get("trade_id") == trade_id]


async def _announced(redis: Redis, trade_id: str) -> list[dict[str, str]]:
    return _entries(await redis.xrange(STREAM_STAKE_EXECUTED), trade_id)


async def _all_acked(redis: Redis) -> bool:
    groups = await redis.xinfo_groups(STREAM_SENTIMENT_SCORED)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


class TestStoredStateDecides:
    @pytest.mark.parametrize(
        ("stored_score", "forged", "named"),
        [
            (0, {"score": 100}, "score 100 (event) vs 0 (stored)"),
            (60, {"hotkey": BOB}, f"hotkey {BOB} (event) vs {ALICE} (stored)"),
            (60, {"netuid": 7}, "netuid 7 (event) vs 3 (stored)"),
        ],
    )
    async def test_event_disagreeing_with_stored_rows_is_rejected(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        stored_score: int,
        forged: dict[str, Any],
        named: str,
    ) -> None:
        staker = FakeStaker()
        trade_id = new_id()
        stored = await stored_scored(trade_id, stored_score)
        async with running_worker(pipeline_settings, staker, stages=("stake",)):
            await publish(redis, stored.model_copy(update=forged), maxlen=1000)
            action = await eventually(lambda: _settled(trade_id))
            [announced] = await eventually(lambda: _announced(redis, trade_id))
        assert action.status == "rejected" and action.direction == "none"
        assert named in (action.reason or "") and "disagrees with the stored trade" in (
            action.reason or ""
        )
        # The record names what is stored, not what the entry claimed.
        assert (action.netuid, action.hotkey, action.score) == (3, ALICE, stored_score)
        assert staker.extrinsics == [] and staker.calls["account"] == 0
        assert announced["status"] == "rejected" and named in announced["reason"]
        trade = await Trade.get(trade_id=trade_id)
        assert trade.status == "rejected" and named in (trade.reason or "")

    async def test_matching_event_executes_once_on_the_stored_pair(
        self, orm: str, redis: Redis, pipeline_settings: Settings
    ) -> None:
        staker = FakeStaker()
        trade_id = new_id()
        event = await stored_scored(trade_id, 60, netuid=5, hotkey=BOB)
        async with running_worker(pipeline_settings, staker, stages=("stake",)):
            await publish(redis, event, maxlen=1000)
            action = await eventually(lambda: _settled(trade_id))
        assert action.status == "succeeded" and action.score == 60
        assert staker.extrinsics == [("add", 5, BOB, 1_000_000_000)]

    async def test_no_stored_trade_is_dead_lettered_and_not_created(
        self, orm: str, redis: Redis, pipeline_settings: Settings
    ) -> None:
        staker = FakeStaker()
        trade_id = new_id()
        async with running_worker(pipeline_settings, staker, stages=("stake",)):
            await publish(redis, _scored(trade_id, 100), maxlen=1000)
            [letter] = await eventually(lambda: _entries_async(redis, STREAM_DEAD_LETTER, trade_id))
        assert "no stored trade" in letter["error"]
        assert await Trade.exists(trade_id=trade_id) is False
        assert staker.extrinsics == [] and await StakeAction.all().count() == 0

    async def test_no_stored_score_is_rejected(
        self, orm: str, redis: Redis, pipeline_settings: Settings
    ) -> None:
        staker = FakeStaker()
        trade_id = new_id()
        await Trade.create(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api")
        async with running_worker(pipeline_settings, staker, stages=("stake",)):
            await publish(redis, _scored(trade_id, 100), maxlen=1000)
            action = await eventually(lambda: _settled(trade_id))
        assert action.status == "rejected" and action.score is None
        assert "no stored sentiment score" in (action.reason or "")
        assert staker.extrinsics == [] and await SentimentScore.all().count() == 0


async def _entries_async(redis: Redis, stream: str, trade_id: str) -> list[dict[str, str]]:
    return _entries(await redis.xrange(stream), trade_id)


# ---------------------------------------------------------------- risk limits
async def _earlier_action(*, netuid: int, amount: str, ago_s: float) -> None:
    """Another trade of this wallet, already on chain."""
    trade = await Trade.create(trade_id=new_id(), netuid=netuid, hotkey=ALICE, source="api")
    action = await StakeAction.create(
        trade=trade,
        netuid=netuid,
        hotkey=ALICE,
        direction="add",
        status="succeeded",
        amount_tao=Decimal(amount),
        coldkey=COLDKEY,
    )
    when = utcnow() - timedelta(seconds=ago_s)
    await StakeAction.filter(id=action.id).update(created_at=when)


CAPS: dict[str, tuple[str, bool]] = {
    # cap: (words of the stored reason, whether the chain was read before refusing)
    "allowlist": ("netuid 3 is not in TRADE_NETUIDS (18)", False),
    "dead band": ("score 10 is inside the dead band (|score| < MIN_ABS_SCORE=20)", False),
    "stale": ("stale: the trade is 3600s old at the stake stage (MAX_EVENT_AGE_S=900)", False),
    "cooldown": ("cooldown: another stake action on this (netuid, hotkey) 10s ago", False),
    "daily": ("daily limit: 4.500000000 TAO traded by this coldkey in the last 24 h", False),
    "position": ("position cap: 9.500000000 TAO staked here + 1.000000000 TAO", True),
}


class TestRiskLimits:
    @pytest.mark.parametrize("source", ["api", "schedule", "replay"])
    @pytest.mark.parametrize("cap", list(CAPS))
    async def test_each_cap_skips_with_its_reason(
        self, orm: str, redis: Redis, pipeline_settings: Settings, cap: str, source: Source
    ) -> None:
        staker = FakeStaker()
        settings = pipeline_settings.model_copy(
            update={
                "min_abs_score": 20,
                "max_event_age_s": 900.0,
                "trade_cooldown_s": 300,
                "daily_trade_limit_tao": 5.0,
                "max_position_tao": 10.0,
                "trade_netuids": "18" if cap == "allowlist" else "",
            }
        )
        trade_id = new_id()
        created_at = utcnow() - timedelta(hours=1) if cap == "stale" else None
        replay_of = new_id() if source == "replay" else None
        event = await stored_scored(
            trade_id,
            10 if cap == "dead band" else 60,
            source=source,
            created_at=created_at,
            replay_of=replay_of,
        )
        if cap == "cooldown":
            await _earlier_action(netuid=3, amount="1", ago_s=10)
        if cap == "daily":  # on other subnets, beyond any cooldown
            await _earlier_action(netuid=4, amount="2.5", ago_s=3600)
            await _earlier_action(netuid=5, amount="2", ago_s=7200)
            await _earlier_action(netuid=6, amount="3", ago_s=25 * 3600)  # out of the window
        if cap == "position":
            staker.stakes[(3, ALICE)] = 19_000_000_000  # 19 alpha at 0.5 TAO
        reason, reads_chain = CAPS[cap]
        async with running_worker(settings, staker, stages=("stake",)):
            await publish(redis, event, maxlen=1000)
            action = await eventually(lambda: _settled(trade_id))
            [announced] = await eventually(lambda: _announced(redis, trade_id))
        assert action.status == "skipped" and reason in (action.reason or "")
        assert action.direction == "add" and staker.extrinsics == []
        assert staker.calls["account"] == (1 if reads_chain else 0)
        assert announced["status"] == "skipped" and announced["source"] == source
        trade = await Trade.get(trade_id=trade_id)
        assert trade.status == "skipped" and reason in (trade.reason or "")

    async def test_a_request_that_waited_through_an_outage_is_stale(
        self, orm: str, redis: Redis, pipeline_settings: Settings
    ) -> None:
        """Age counts from the request, not from when the first stage got to it."""
        staker = FakeStaker()
        trade_id = new_id()
        requested = DividendRequested(
            trade_id=trade_id,
            netuid=3,
            hotkey=ALICE,
            source="schedule",
            occurred_at=utcnow() - timedelta(hours=1),
        )
        await publish(redis, requested, maxlen=1000)  # queued while no worker ran
        async with running_worker(pipeline_settings, staker):
            action = await eventually(lambda: _settled(trade_id))
        assert action.status == "skipped" and action.score == 60
        assert (action.reason or "").startswith("stale: the trade is 3600s old")
        assert staker.extrinsics == [] and staker.calls["account"] == 0

    async def test_under_every_cap_it_trades(
        self, orm: str, redis: Redis, pipeline_settings: Settings
    ) -> None:
        """The fixtures of the cap test, each just inside its limit."""
        staker = FakeStaker()
        staker.stakes[(3, ALICE)] = 18_000_000_000  # 9 TAO held + 1 = the cap, not beyond
        trade_id = new_id()
        event = await stored_scored(
            trade_id, 20, source="schedule", created_at=utcnow() - timedelta(seconds=800)
        )
        await _earlier_action(netuid=3, amount="2", ago_s=310)  # cooldown over
        await _earlier_action(netuid=4, amount="2", ago_s=3600)  # 4 + 1 = the daily limit
        async with running_worker(pipeline_settings, staker, stages=("stake",)):
            await publish(redis, event, maxlen=1000)
            action = await eventually(lambda: _settled(trade_id))
        assert action.status == "succeeded", action.reason
        assert staker.extrinsics == [("add", 3, ALICE, 1_000_000_000)]

    async def test_removes_pass_the_position_cap(
        self, orm: str, redis: Redis, pipeline_settings: Settings
    ) -> None:
        staker = FakeStaker()
        staker.stakes[(3, ALICE)] = 100_000_000_000  # 50 TAO, far above MAX_POSITION_TAO
        trade_id = new_id()
        event = await stored_scored(trade_id, -60)
        async with running_worker(pipeline_settings, staker, stages=("stake",)):
            await publish(redis, event, maxlen=1000)
            action = await eventually(lambda: _settled(trade_id))
        assert action.status == "succeeded" and action.direction == "remove"
        assert staker.extrinsics == [("remove", 3, ALICE, 2_000_000_000)]


# ---------------------------------------------------------------- mutation check
async def test_replayed_failed_trade_is_already_executed(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """`failed` is as final as `succeeded`: a replay must be recognised, not retried into
    the dead letters (fails if TERMINAL is reduced to {"succeeded"})."""
    staker = FakeStaker()
    trade_id = new_id()
    event = await stored_scored(trade_id, 60)
    await StakeAction.create(
        trade_id=trade_id,
        netuid=3,
        hotkey=ALICE,
        direction="add",
        status="failed",
        success=False,
        reason="chain rejected the extrinsic: SubnetNotExists",
        amount_tao=Decimal(1),
        coldkey=COLDKEY,
    )
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, event.model_copy(update={"source": "replay"}), maxlen=1000)
        [announced] = await eventually(lambda: _announced(redis, trade_id))
        await eventually(lambda: _all_acked(redis))
    assert announced["status"] == "failed" and announced["source"] == "replay"
    assert announced["reason"].startswith("already executed: chain rejected the extrinsic")
    assert staker.extrinsics == [] and await redis.xlen(STREAM_DEAD_LETTER) == 0
    row = await StakeAction.get(trade_id=trade_id)
    assert row.status == "failed"


# ---------------------------------------------------------------- price protection
async def test_price_moved_beyond_tolerance_fails_with_the_error_named_not_retried(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker(price_tao=0.5)
    staker.move_price_next = (3, 510_000_000)  # +2 % between the read and inclusion
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await _stored(trade_id), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
        await eventually(lambda: _all_acked(redis))
        await asyncio.sleep(0.3)
    (order,) = staker.orders
    # As the SDK's safe staking computes it: Balance.from_tao(0.5 * (1 + 0.005)).rao
    assert (order.limit_price_rao, order.allow_partial) == (502_499_999, False)
    assert (action.status, action.success, action.error_name) == (
        "failed",
        False,
        "SlippageTooHigh",
    )
    assert action.limit_price_rao == 502_499_999
    assert action.reason == (
        "price moved beyond the limit (SLIPPAGE_TOLERANCE=0.005): SlippageTooHigh; not retried"
    )
    assert len(staker.extrinsics) == 1 and staker.calls["sign"] == 1


async def test_unstake_limit_is_below_the_price_and_partial_fills_follow_the_setting(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker(price_tao=0.5)
    staker.stakes[(3, ALICE)] = 10 * 10**9
    settings = pipeline_settings.model_copy(
        update={"slippage_tolerance": 0.02, "allow_partial_stake": True}
    )
    trade_id = new_id()
    async with running_worker(settings, staker, stages=("stake",)):
        await publish(redis, await _stored(trade_id, score=-50), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    (order,) = staker.orders
    assert (order.direction, order.amount_rao) == ("remove", 2 * 10**9)  # 1 TAO at 0.5
    assert (order.limit_price_rao, order.allow_partial) == (490_000_000, True)  # 0.5 × 0.98
    assert action.status == "succeeded" and action.limit_price_rao == 490_000_000
