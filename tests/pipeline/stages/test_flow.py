"""Trades through the three stages on real Redis and PostgreSQL, with fake Datura/Chutes
servers and a fake behind the stake interface."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from redis.asyncio import Redis

from shared import signing
from shared.bus import publish
from shared.constants import (
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_TWEETS_FETCHED,
)
from shared.db.models import SentimentScore, StakeAction, Trade, TweetBatch
from shared.events import DividendRequested, SentimentScored
from shared.ids import new_id
from shared.settings import Settings
from tests.fakes import Reply
from tests.fakes.chain import ALICE, BOB
from tests.fakes.chutes import FakeChutes
from tests.fakes.datura import FakeDatura
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import eventually, running_worker


async def _request(redis: Redis, netuid: int = 3, hotkey: str = ALICE) -> str:
    trade_id = new_id()
    await publish(
        redis,
        DividendRequested(trade_id=trade_id, netuid=netuid, hotkey=hotkey, source="manual"),
        maxlen=1000,
    )
    return trade_id


async def _action(trade_id: str) -> StakeAction | None:
    """The trade's stake action once it has settled (not while submitting)."""
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status not in {"submitting", "unknown"} else None


async def _executed(redis: Redis, trade_id: str) -> list[dict[str, str]]:
    entries = await redis.xrange(STREAM_STAKE_EXECUTED)
    out = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    return [e for e in out if e["trade_id"] == trade_id]


class TestDirections:
    async def test_positive_score_stakes_one_tao(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
        chutes: FakeChutes,
    ) -> None:
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "succeeded" and action.direction == "add"
        assert staker.extrinsics == [("add", 3, ALICE, 1_000_000_000)]
        assert str(action.amount_tao) == "1.000000000" and action.extrinsic_hash
        assert action.nonce_before == 0 and action.balance_before_rao == 10_000_000_000
        batch = await TweetBatch.get(trade_id=trade_id)
        assert batch.count == len(datura.tweets) > 0 and batch.source == "datura"
        assert datura.searches == ["Netuid 3"]
        score = await SentimentScore.get(trade_id=trade_id)
        assert (score.score, score.backend) == (60, "llm")
        [event] = await _executed(redis, trade_id)
        assert event["status"] == "succeeded" and event["direction"] == "add"
        assert event["source"] == "manual" and event["success"] == "true"
        trade = await Trade.get(trade_id=trade_id)
        assert trade.status == "succeeded"

    async def test_negative_score_unstakes_alpha_worth_one_tao(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        chutes.content = '{"score": -45}'
        staker.stakes[(3, ALICE)] = 5_000_000_000  # 5 alpha at 0.5 TAO/alpha
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "succeeded" and action.direction == "remove"
        assert staker.extrinsics == [("remove", 3, ALICE, 2_000_000_000)]  # 1 TAO = 2 alpha
        assert str(action.amount_alpha) == "2.000000000"

    async def test_unstake_is_capped_at_the_held_stake(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        chutes.content = '{"score": -90}'
        staker.stakes[(3, ALICE)] = 300_000_000
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            await eventually(lambda: _action(trade_id))
        assert staker.extrinsics == [("remove", 3, ALICE, 300_000_000)]

    async def test_zero_score_does_nothing(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        chutes.content = '{"score": 0}'
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert (action.status, action.direction) == ("skipped", "none")
        assert "neutral" in (action.reason or "") and staker.extrinsics == []

    async def test_no_tweets_is_neutral_and_says_why(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
        chutes: FakeChutes,
    ) -> None:
        datura.set_tweets([])
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "skipped" and staker.extrinsics == []
        score = await SentimentScore.get(trade_id=trade_id)
        assert score.backend == "none" and "no tweets" in (score.reason or "")
        assert chutes.request_count == 0


class TestOutsideFailures:
    async def test_datura_401_and_402_end_the_trade_with_a_reason(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
    ) -> None:
        datura.script(Reply(status=401), Reply(status=402))
        async with running_worker(pipeline_settings, staker):
            first = await _request(redis, netuid=3)
            second = await _request(redis, netuid=4)

            async def ended() -> list[Trade]:
                rows = await Trade.filter(trade_id__in=[first, second], status="ended")
                return rows if len(rows) == 2 else []

            trades = {t.trade_id: t for t in await eventually(ended)}
        reasons = sorted(t.reason or "" for t in trades.values())
        assert "HTTP 401" in reasons[0] and "HTTP 402" in reasons[1]  # order of arrival varies
        assert datura.request_count == 2  # not retried
        assert await SentimentScore.all().count() == 0 and staker.extrinsics == []

    async def test_datura_429_is_retried(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
    ) -> None:
        datura.script(Reply(status=429))
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "succeeded" and datura.request_count == 2

    async def test_datura_outage_is_waited_out_without_dead_letters(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
    ) -> None:
        """Datura timing out for longer than MAX_DELIVERIES tries used to dead-letter the
        trade; now the stage waits in place and the trade goes on once Datura answers."""
        settings = pipeline_settings.model_copy(
            update={
                "datura_timeout_s": 0.1,
                "http_max_retries": 0,
                "worker_outage_backoff_s": 0.02,
                "worker_outage_backoff_max_s": 0.05,
            }
        )
        datura.script(*[Reply(delay_s=0.3)] * 6)  # six timeouts, twice MAX_DELIVERIES
        async with running_worker(settings, staker) as worker:
            trade_id = await _request(redis)

            async def scored() -> Any:
                return await SentimentScore.get_or_none(trade_id=trade_id)

            assert await eventually(scored)
            assert worker.stats["outage_waits"] >= 6
        assert await redis.xlen(STREAM_DEAD_LETTER) == 0
        assert datura.request_count == 7  # six timeouts, then the answer
        batch = await TweetBatch.get(trade_id=trade_id)
        assert batch.count > 0

    async def test_llm_garbage_falls_back_to_vader(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        chutes.content = "I cannot help with that."
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            await eventually(lambda: _action(trade_id))
        score = await SentimentScore.get(trade_id=trade_id)
        assert score.backend == "vader" and "unusable_reply" in (score.fallback_reason or "")

    async def test_llm_down_falls_back_to_vader(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        chutes.script(*[Reply(status=503)] * 4)
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            await eventually(lambda: _action(trade_id))
        score = await SentimentScore.get(trade_id=trade_id)
        assert score.backend == "vader" and score.score is not None
        assert "chutes_unavailable" in (score.fallback_reason or "")

    async def test_fallback_off_means_no_trade(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        settings = pipeline_settings.model_copy(update={"sentiment_fallback": "none"})
        chutes.script(*[Reply(status=503)] * 4)
        async with running_worker(settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "skipped" and action.score is None
        assert staker.extrinsics == []


class TestSafety:
    async def test_dry_run_records_without_submitting(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
    ) -> None:
        settings = pipeline_settings.model_copy(update={"stake_dry_run": True})
        async with running_worker(settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "dry_run" and "would add_stake" in (action.reason or "")
        assert staker.extrinsics == []

    async def test_kill_switch(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
    ) -> None:
        settings = pipeline_settings.model_copy(update={"staking_enabled": False})
        async with running_worker(settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "skipped" and "STAKING_ENABLED" in (action.reason or "")
        assert staker.extrinsics == [] and staker.calls["account"] == 0

    async def test_no_wallet_is_recorded_as_skipped(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
    ) -> None:
        async with running_worker(pipeline_settings, None, problem="no coldkey at /x/default"):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "skipped" and "no coldkey at /x/default" in (action.reason or "")

    async def test_insufficient_balance(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
    ) -> None:
        poor = FakeStaker(free_tao=0.5)
        async with running_worker(pipeline_settings, poor):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "skipped" and "insufficient free balance" in (action.reason or "")
        assert poor.extrinsics == []

    async def test_unstake_with_no_stake(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        chutes.content = '{"score": -70}'
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "skipped" and "nothing to unstake" in (action.reason or "")
        assert staker.extrinsics == []

    async def test_chain_failure_is_stored_with_its_error_name(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
    ) -> None:
        staker.fail_next = "SubnetNotExists"
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
            await eventually(lambda: _executed(redis, trade_id))
        assert action.status == "failed" and action.error_name == "SubnetNotExists"
        assert action.success is False and len(staker.extrinsics) == 1


WRONG_KEY = b"an-attackers-guess-at-the-key-0000"


def _forged(fields: dict[str, str]) -> dict[str, str]:
    return signing.sign(fields, key=WRONG_KEY)


def _unsigned(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "sig"}


async def _dead_letter(redis: Redis) -> dict[str, str]:
    async def dead() -> list[Any]:
        return await redis.xrange(STREAM_DEAD_LETTER)

    [(_, fields)] = await eventually(dead)
    return {k.decode(): v.decode() for k, v in fields.items()}


class TestTrustedEvents:
    """Only entries signed with EVENT_SIGNING_KEY make a stage act; the rest are dead-lettered
    with the reason, before any database write or next event."""

    @pytest.mark.parametrize(
        ("tamper", "reason"), [(_forged, "bad signature"), (_unsigned, "unsigned event")]
    )
    async def test_forged_or_unsigned_sentiment_never_stakes(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        tamper: Any,
        reason: str,
    ) -> None:
        trade_id = new_id()
        event = SentimentScored(
            trade_id=trade_id, netuid=7, hotkey=BOB, source="api", score=100, backend="llm"
        )
        async with running_worker(pipeline_settings, staker):
            await redis.xadd(STREAM_SENTIMENT_SCORED, tamper(event.to_fields()))
            letter = await _dead_letter(redis)
        assert letter["trade_id"] == trade_id and letter["stream"] == STREAM_SENTIMENT_SCORED
        assert reason in letter["error"]
        assert staker.extrinsics == []
        assert await StakeAction.all().count() == 0 and await Trade.all().count() == 0
        assert await redis.xlen(STREAM_STAKE_EXECUTED) == 0

    @pytest.mark.parametrize(
        ("tamper", "reason"), [(_forged, "bad signature"), (_unsigned, "unsigned event")]
    )
    async def test_forged_or_unsigned_request_is_not_fetched(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
        tamper: Any,
        reason: str,
    ) -> None:
        event = DividendRequested(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
        async with running_worker(pipeline_settings, staker):
            await redis.xadd(STREAM_DIVIDEND_REQUESTED, tamper(event.to_fields()))
            letter = await _dead_letter(redis)
        assert reason in letter["error"] and letter["trade_id"] == event.trade_id
        assert datura.request_count == 0
        assert await Trade.all().count() == 0 and await TweetBatch.all().count() == 0
        assert await redis.xlen(STREAM_TWEETS_FETCHED) == 0

    async def test_a_signed_entry_with_edited_fields_is_refused(
        self, orm: str, redis: Redis, pipeline_settings: Settings, staker: FakeStaker
    ) -> None:
        """Someone who can write to Redis but lacks the key cannot raise a real event's score."""
        fields = SentimentScored(
            trade_id=new_id(), netuid=3, hotkey=ALICE, source="api", score=0, backend="llm"
        ).to_fields()
        async with running_worker(pipeline_settings, staker):
            await redis.xadd(STREAM_SENTIMENT_SCORED, dict(fields, score="100"))
            letter = await _dead_letter(redis)
        assert "bad signature" in letter["error"] and staker.extrinsics == []

    @pytest.mark.parametrize(
        ("edit", "why"),
        [({"hotkey": "not-an-ss58"}, "SS58"), ({"netuid": "65536"}, "netuid")],
    )
    async def test_bad_hotkey_or_netuid_is_malformed(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        edit: dict[str, str],
        why: str,
    ) -> None:
        fields = SentimentScored(
            trade_id=new_id(), netuid=3, hotkey=ALICE, source="api", score=90, backend="llm"
        ).to_fields()
        async with running_worker(pipeline_settings, staker):
            await redis.xadd(STREAM_SENTIMENT_SCORED, signing.sign(dict(fields, **edit)))
            letter = await _dead_letter(redis)
        assert "malformed sentiment_scored entry" in letter["error"] and why in letter["error"]
        assert staker.extrinsics == [] and await StakeAction.all().count() == 0
        assert await Trade.all().count() == 0

    async def test_signed_entries_flow_and_every_published_entry_is_signed(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        chutes: FakeChutes,
    ) -> None:
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            action = await eventually(lambda: _action(trade_id))
        assert action.status == "succeeded" and await redis.xlen(STREAM_DEAD_LETTER) == 0
        for stream in (STREAM_TWEETS_FETCHED, STREAM_SENTIMENT_SCORED, STREAM_STAKE_EXECUTED):
            [(_, raw)] = await redis.xrange(stream)
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            signing.verify(fields)
            signing.verify(
                fields, key=pipeline_settings.event_signing_key.get_secret_value().encode()
            )  # type: ignore[union-attr]


class TestEngagement:
    async def test_likes_reach_the_prompt(
        self,
        orm: str,
        redis: Redis,
        pipeline_settings: Settings,
        staker: FakeStaker,
        datura: FakeDatura,
        chutes: FakeChutes,
    ) -> None:
        async with running_worker(pipeline_settings, staker):
            trade_id = await _request(redis)
            await eventually(lambda: _action(trade_id))
        [body] = chutes.bodies
        prompt = body["messages"][1]["content"]
        sent = json.loads(re.search(r"<tweets>\n(.*)\n</tweets>", prompt, re.S).group(1))  # type: ignore[union-attr]
        by_text = {t["text"]: t for t in datura.tweets}
        assert sent and all(item["text"] in by_text for item in sent)
        for item in sent:
            original = by_text[item["text"]]
            assert item["likes"] == original.get("like_count", 0)
            assert item["retweets"] == original.get("retweet_count", 0)
            assert item["replies"] == original.get("reply_count", 0)
        assert max(item["likes"] for item in sent) > 0
        stored = await TweetBatch.get(trade_id=trade_id)
        assert stored.tweets[0].like_count == datura.tweets[0]["like_count"]
