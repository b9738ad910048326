"""The global gauges as the sampler reads them from Redis streams, the stake_actions table and
beat's keys, and what a failed read leaves behind."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from redis.asyncio import Redis

from pipeline.metrics.constants import SKIP_REASON_LABELS, SKIP_REASONS
from pipeline.metrics.sampler import Sampler
from pipeline.stages.decision import decide
from shared.chain.staking_types import NOT_SENT_MESSAGE
from shared.constants import (
    STREAM_DEAD_LETTER,
    STREAM_SENTIMENT_SCORED,
)
from shared.db.models import StakeAction, Trade
from shared.ids import new_id, utcnow
from shared.settings import Settings
from tests.conftest import free_port
from tests.fakes.chain import ALICE
from tests.pipeline.metrics.samples import parse_collector, value


async def test_lag_pending_and_the_age_of_the_oldest_pending_entry(redis: Redis) -> None:
    ids = [await redis.xadd(STREAM_SENTIMENT_SCORED, {"n": str(n)}) for n in range(5)]
    await redis.xgroup_create(STREAM_SENTIMENT_SCORED, "stake", id="0")
    await redis.xreadgroup("stake", "c1", {STREAM_SENTIMENT_SCORED: ">"}, count=2)
    await redis.xack(STREAM_SENTIMENT_SCORED, "stake", ids[1])
    await asyncio.sleep(0.3)
    await Sampler(redis).sample_once("streams")
    samples = parse_collector()
    labels = {"stream": STREAM_SENTIMENT_SCORED, "group": "stake"}
    assert value(samples, "taostake_stream_length", stream=STREAM_SENTIMENT_SCORED) == 5
    assert value(samples, "taostake_stream_group_lag", **labels) == 3  # never delivered
    assert value(samples, "taostake_stream_group_pending", **labels) == 1  # delivered, not acked
    age = value(samples, "taostake_stream_group_oldest_pending_age_seconds", **labels)
    assert 0.25 <= age < 10
    # Streams nobody created yet have no groups and length 0.
    assert value(samples, "taostake_stream_length", stream=STREAM_DEAD_LETTER) == 0
    assert not [
        labels
        for name, labels in samples
        if name == "taostake_stream_group_pending" and ("group", "tweets") in labels
    ]


async def test_stake_gauges_from_the_table(orm: str, redis: Redis, settings: Settings) -> None:
    reasons = {
        "no_score": decide(None, settings).reason,
        "neutral": decide(0, settings).reason,
        "zero_amount": decide(
            1,
            settings.model_copy(update={"stake_sizing": "proportional", "stake_amount_tao": 1e-9}),
        ).reason,
        "dead_band": "score 5 is inside the dead band (|score| < MIN_ABS_SCORE=20)",
        "not_allowlisted": "netuid 7 is not in TRADE_NETUIDS (1, 18)",
        "stale": "stale: the trade is 1200s old at the stake stage (MAX_EVENT_AGE_S=900)",
        "cooldown": "cooldown: another stake action on this (netuid, hotkey) 3s ago (...)",
        "daily_limit": "daily limit: 5 TAO traded by this coldkey in the last 24 h + 1 TAO ...",
        "position_cap": "position cap: 10 TAO staked here + 1 TAO would exceed ...",
        "staking_disabled": "staking disabled (STAKING_ENABLED=false)",
        "insufficient_balance": "insufficient free balance: 0.1 TAO for 1 TAO",
        "nothing_to_unstake": "nothing to unstake on netuid 3",
        "no_price": "no usable price for netuid 3 (read 0 rao): nothing submitted",
        "no_wallet": "no coldkey at ~/.bittensor/wallets/default: nothing submitted",
        "other": "a reason nobody classified yet",
    }
    assert set(reasons) == set(SKIP_REASON_LABELS) and len(SKIP_REASONS) + 1 == len(reasons)
    rows: list[tuple[str, str | None, timedelta]] = [
        ("skipped", reason, timedelta()) for reason in reasons.values()
    ]
    rows += [("skipped", reasons["dead_band"], timedelta())] * 2
    rows += [
        ("succeeded", None, timedelta(minutes=5)),
        ("failed", None, timedelta(minutes=4)),
        ("unknown", None, timedelta(seconds=200)),
        ("submitting", None, timedelta(seconds=90)),
        ("dry_run", None, timedelta()),
    ]
    now = utcnow()
    for netuid, (status, reason, age) in enumerate(rows):
        trade = await Trade.create(trade_id=new_id(), netuid=netuid, hotkey=ALICE, source="api")
        action = await StakeAction.create(
            trade=trade,
            netuid=netuid,
            hotkey=ALICE,
            direction="add",
            status=status,
            reason=reason,
            submitted_at=now - age if status != "skipped" else None,
        )
        await StakeAction.filter(id=action.id).update(created_at=now - age)
    # Signed and stored, never sent (no chain connection at submit): no on-chain failure.
    trade = await Trade.create(trade_id=new_id(), netuid=len(rows), hotkey=ALICE, source="api")
    await StakeAction.create(
        trade=trade,
        netuid=len(rows),
        hotkey=ALICE,
        direction="add",
        status="failed",
        success=False,
        message=NOT_SENT_MESSAGE,
        reason="not sent: chain ws://node is not connected; nothing was submitted (...)",
        submitted_at=now,
    )

    await Sampler(redis).sample_once("database")
    samples = parse_collector()
    for label in SKIP_REASON_LABELS:
        expected = 3 if label == "dead_band" else 1
        assert value(samples, "taostake_stake_skips", reason=label) == expected, label
    assert value(samples, "taostake_stake_actions", status="skipped") == len(reasons) + 2
    assert value(samples, "taostake_stake_actions", status="rejected") == 0
    for outcome in ("succeeded", "failed", "unknown", "submitting"):
        assert value(samples, "taostake_stake_extrinsics", outcome=outcome) == 1, outcome
    assert value(samples, "taostake_stake_actions", status="failed") == 2  # with the unsent
    assert value(samples, "taostake_stake_actions", status="dry_run") == 1
    oldest = value(samples, "taostake_stake_oldest_unsettled_age_seconds")
    assert 195 <= oldest <= 230  # the `unknown` row, submitted 200 s ago


async def test_an_empty_table_reads_as_zeros(orm: str, redis: Redis) -> None:
    await Sampler(redis).sample_once("database")
    samples = parse_collector()
    assert value(samples, "taostake_stake_actions", status="succeeded") == 0
    assert ("taostake_stake_actions", (("status", "succeeded"),)) in samples
    assert ("taostake_stake_oldest_unsettled_age_seconds", ()) in samples


async def test_beat_runs_reach_the_pipeline_through_redis(redis: Redis, settings: Settings) -> None:
    from pipeline.schedule import _count_failure, rescore

    beat_settings = settings.model_copy(
        update={"watchlist": f"3:{ALICE},4:{ALICE}", "rescore_interval_s": 600}
    )
    sampler = Sampler(redis)
    await sampler.sample_once("schedule")
    before = parse_collector()
    assert value(before, "taostake_schedule_runs_total") == 0
    assert ("taostake_schedule_last_run_timestamp_seconds", ()) not in before

    await rescore(redis, beat_settings)
    await rescore(redis, beat_settings)  # both pairs inside their cooldown now
    await _count_failure(redis)
    await sampler.sample_once("schedule")
    after = parse_collector()
    assert value(after, "taostake_schedule_runs_total") == 2
    assert value(after, "taostake_schedule_errors_total") == 1
    assert value(after, "taostake_schedule_last_run_tracked_pairs") == 2
    assert value(after, "taostake_schedule_last_run_enqueued_trades") == 0
    assert value(after, "taostake_schedule_interval_seconds") == 600
    assert 0 <= value(after, "taostake_schedule_last_run_duration_seconds") < 5
    assert abs(value(after, "taostake_schedule_last_run_timestamp_seconds") - time.time()) < 10


async def test_a_failed_source_is_counted_and_its_gauges_dropped(redis: Redis) -> None:
    await Sampler(redis, every_s=1).sample_once("schedule")
    assert ("taostake_schedule_runs_total", ()) in parse_collector()
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        errors_before = _sample_errors("schedule")
        await Sampler(nowhere, every_s=1, timeout_s=2).sample_once("schedule")
        assert _sample_errors("schedule") == errors_before + 1
        assert ("taostake_schedule_runs_total", ()) not in parse_collector()
    finally:
        await nowhere.aclose()


def _sample_errors(source: str) -> float:
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value("taostake_metrics_sample_errors_total", {"source": source})
    return found or 0.0
