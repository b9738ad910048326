"""The stage kit over real PostgreSQL and Redis: a batch checked entry by entry, each trade
computed once, stored records answering redeliveries and races, identity carried on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from redis.asyncio import Redis

from pipeline.entries import Drop, Outcomes, Stage, StreamEntry
from pipeline.stages.kit import BatchStage
from pipeline.stages.records import Publisher, ensure_trades
from pipeline.worker import Worker
from shared import signing
from shared.constants import (
    GROUP_TWEETS,
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_TWEETS_FETCHED,
)
from shared.db.models import Trade, TweetBatch
from shared.events import DeadLetter, DividendRequested, Source, TweetsFetched
from shared.ids import utcnow
from shared.tweets import Tweet
from tests.concurrency import HighWater
from tests.fakes.chain import ALICE, BOB

Hook = Callable[[DividendRequested], Awaitable[None]]


class FetchStage(BatchStage[DividendRequested, TweetBatch]):
    """A tweets-like stage whose compute is scripted per trade and counted."""

    name: ClassVar[str] = "kit-test"
    consumes = DividendRequested
    record = TweetBatch
    status: ClassVar[str] = "tweets_fetched"
    before: ClassVar[tuple[str, ...]] = ("requested",)

    def __init__(
        self,
        publish: Publisher,
        *,
        fail: Sequence[str] = (),
        refuse: Sequence[str] = (),
        before_return: Hook | None = None,
        unstorable: Sequence[str] = (),
        text: str = "subnet shipping",
        compute_timeout_s: float | None = None,
    ) -> None:
        super().__init__(publish, compute_timeout_s=compute_timeout_s)
        self._unstorable = set(unstorable)
        self._text = text
        self.computed: list[str] = []
        self._fail = set(fail)
        self._refuse = set(refuse)
        self._before_return = before_return

    async def compute(self, event: DividendRequested) -> TweetBatch:
        self.computed.append(event.trade_id)
        if event.trade_id in self._fail:
            raise ValueError(f"search failed for {event.trade_id}")
        if self._before_return is not None:
            await self._before_return(event)
        tweet = Tweet(id=f"{event.netuid}-1", text=self._text, like_count=4)
        query = "q" * 300 if event.trade_id in self._unstorable else f"ours {event.netuid}"
        batch = TweetBatch(trade_id=event.trade_id, source="datura", query=query, count=1)
        batch.tweets = [tweet]
        if event.trade_id in self._refuse:
            batch.error = "Datura refused the search (quota)"
        return batch

    def ends(self, record: TweetBatch) -> str | None:
        return record.error

    def next(self, event: DividendRequested, record: TweetBatch) -> TweetsFetched:
        return event.next(
            TweetsFetched,
            count=record.count,
            tweet_source=record.source,
            query=record.query,
            tweets=record.tweets,
        )


def requested(
    trade_id: str, netuid: int = 3, hotkey: str = ALICE, source: Source = "api"
) -> DividendRequested:
    return DividendRequested(trade_id=trade_id, netuid=netuid, hotkey=hotkey, source=source)


def entries_of(*events: DividendRequested, deliveries: int = 1) -> list[StreamEntry]:
    return [
        StreamEntry(
            STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, f"{n + 1}-0", event.to_fields(), deliveries
        )
        for n, event in enumerate(events)
    ]


async def published(redis: Redis) -> list[TweetsFetched]:
    rows: Any = await redis.xrange(STREAM_TWEETS_FETCHED)
    out = []
    for _, raw in rows:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        signing.verify(fields)
        out.append(TweetsFetched.from_fields(fields))
    return out


async def statuses(*trade_ids: str) -> dict[str, str]:
    rows = await Trade.filter(trade_id__in=list(trade_ids))
    return {row.trade_id: row.status for row in rows}


@pytest.fixture
def publisher(orm: str, redis: Redis) -> Publisher:
    return Publisher(redis, maxlen=1000)


async def run(stage: FetchStage, entries: list[StreamEntry]) -> Outcomes:
    outcomes: Outcomes = {}
    await stage.run(entries, outcomes)
    return outcomes


class TestParse:
    async def test_a_badly_signed_entry_is_dropped_alone(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        stage = FetchStage(publisher)
        entries = entries_of(requested("t0"), requested("t1"), requested("t2"), requested("t3"))
        forged = dict(entries[1].fields, netuid="4")  # changed after signing
        entries[1] = StreamEntry(STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, "2-0", forged, 1)
        bad_hotkey = requested("t3", hotkey="not-an-ss58-address")
        entries[3] = StreamEntry(
            STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, "4-0", bad_hotkey.to_fields(), 1
        )
        outcomes = await run(stage, entries)
        assert set(outcomes) == {"1-0", "2-0", "3-0", "4-0"}
        assert (outcomes["1-0"], outcomes["3-0"]) == (None, None)
        assert isinstance(outcomes["2-0"], Drop)
        assert str(outcomes["2-0"]) == "bad signature in dividend_requested entry"
        assert isinstance(outcomes["4-0"], Drop)
        assert "SS58" in str(outcomes["4-0"])
        assert sorted(stage.computed) == ["t0", "t2"]
        assert await statuses("t0", "t1", "t2", "t3") == {
            "t0": "tweets_fetched",
            "t2": "tweets_fetched",
        }
        assert sorted(e.trade_id for e in await published(redis)) == ["t0", "t2"]

    async def test_a_batch_of_only_bad_entries_touches_nothing(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        stage = FetchStage(publisher)
        (entry,) = entries_of(requested("t0"))
        unsigned = {k: v for k, v in entry.fields.items() if k != "sig"}
        outcomes = await run(
            stage, [StreamEntry(STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, "1-0", unsigned, 1)]
        )
        assert str(outcomes["1-0"]) == "unsigned event in dividend_requested entry"
        assert stage.computed == []
        assert await Trade.all().count() == 0
        assert await published(redis) == []


async def stored_before(trade_id: str, status: str = "requested") -> None:
    """The stage's record for `trade_id` committed earlier, its trade left at `status` (the
    consumer died, or the reply to its commit was lost, before the trade moved)."""
    trade = await Trade.create(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api")
    await Trade.filter(trade_id=trade_id).update(status=status)
    await TweetBatch.create(trade=trade, source="cache", query="stored", count=0, tweets=[])


class TestStoredBefore:
    async def test_a_first_delivery_whose_compute_fails_is_answered_from_its_record(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        """Retried in place after its commit's reply was lost: the outside call fails now,
        but the record is there, so the entry is answered from it and its trade caught up."""
        await stored_before("t0")
        stage = FetchStage(publisher, fail=["t0"])
        outcomes = await run(stage, entries_of(requested("t0")))
        assert outcomes == {"1-0": None}
        assert stage.computed == ["t0"]
        assert [e.query for e in await published(redis)] == ["stored"]
        assert await statuses("t0") == {"t0": "tweets_fetched"}

    async def test_an_old_first_delivery_is_looked_up_before_any_outside_call(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        """A requeued dead letter or a stream read again arrives as a first delivery, long
        after it was published."""
        await stored_before("t0")
        published_at = utcnow() - timedelta(minutes=10)
        event = DividendRequested(
            trade_id="t0", netuid=3, hotkey=ALICE, source="api", occurred_at=published_at
        )
        stage = FetchStage(publisher)
        outcomes = await run(stage, entries_of(event))
        assert outcomes == {"1-0": None}
        assert stage.computed == []
        assert [e.query for e in await published(redis)] == ["stored"]

    @pytest.mark.parametrize(
        ("status", "after"),
        [("requested", "tweets_fetched"), ("scored", "scored"), ("succeeded", "succeeded")],
    )
    async def test_a_redelivered_entry_catches_its_trade_up_never_back(
        self, publisher: Publisher, status: str, after: str
    ) -> None:
        await stored_before("t0", status)
        outcomes = await run(FetchStage(publisher), entries_of(requested("t0"), deliveries=2))
        assert outcomes == {"1-0": None}
        assert await statuses("t0") == {"t0": after}


class TestCompute:
    async def test_the_same_trade_twice_in_a_batch_is_computed_once(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        stage = FetchStage(publisher)
        outcomes = await run(stage, entries_of(requested("t0"), requested("t0"), requested("t1")))
        assert outcomes == {"1-0": None, "2-0": None, "3-0": None}
        assert sorted(stage.computed) == ["t0", "t1"]
        assert await TweetBatch.filter(trade_id="t0").count() == 1
        events = await published(redis)
        assert {e.trade_id for e in events} == {"t0", "t1"}
        assert {e.query for e in events if e.trade_id == "t0"} == {"ours 3"}

    @pytest.mark.parametrize(
        ("source", "deliveries", "computed"),
        [
            ("api", 2, []),  # redelivered: its consumer may have stored the record
            ("replay", 1, []),  # replayed: published again on purpose, answered from the record
            ("api", 1, ["t0"]),  # the same event published twice: computed, the stored wins
        ],
    )
    async def test_an_entry_with_a_stored_record_is_answered_from_it(
        self,
        publisher: Publisher,
        redis: Redis,
        source: Source,
        deliveries: int,
        computed: list[str],
    ) -> None:
        event = requested("t0", netuid=5, source=source)
        trade = await Trade.create(
            trade_id="t0", netuid=5, hotkey=ALICE, source="api", status="scored"
        )
        await TweetBatch.create(
            trade=trade,
            source="cache",
            query="stored query",
            count=2,
            tweets=[Tweet(id="9", text="stored", retweet_count=6), Tweet(text="other")],
        )
        stage = FetchStage(publisher)
        outcomes = await run(stage, entries_of(event, deliveries=deliveries))
        assert outcomes == {"1-0": None}
        assert stage.computed == computed
        assert await TweetBatch.filter(trade_id="t0").count() == 1
        (sent,) = await published(redis)
        assert (sent.count, sent.tweet_source, sent.query) == (2, "cache", "stored query")
        assert [(t.id, t.text, t.retweet_count) for t in sent.tweets] == [
            ("9", "stored", 6),
            (None, "other", 0),
        ]
        assert await statuses("t0") == {"t0": "scored"}  # a later stage's status stays

    async def test_a_record_committed_first_by_another_consumer_wins(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        async def other_consumer_commits(event: DividendRequested) -> None:
            await ensure_trades([event])  # the other consumer stores the trade with its record
            await TweetBatch.create(
                trade_id=event.trade_id, source="cache", query="theirs", count=7, tweets=[]
            )

        stage = FetchStage(publisher, before_return=other_consumer_commits)
        outcomes = await run(stage, entries_of(requested("t0")))
        assert outcomes == {"1-0": None}
        assert stage.computed == ["t0"]
        (stored,) = await TweetBatch.filter(trade_id="t0")
        assert (stored.query, stored.count, stored.source) == ("theirs", 7, "cache")
        (sent,) = await published(redis)
        assert (sent.query, sent.count, sent.tweet_source) == ("theirs", 7, "cache")
        assert sent.tweets == []

    async def test_losing_the_race_does_not_move_back_a_trade_the_winner_moved_on(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        """The winner's record was published and later stages moved the trade on while this
        consumer computed: the loser answers from the winner's record, like a redelivery,
        and must not set the trade back to this stage's status."""

        async def winner_commits_and_trade_moves_on(event: DividendRequested) -> None:
            await ensure_trades([event])
            await TweetBatch.create(
                trade_id=event.trade_id, source="cache", query="theirs", count=7, tweets=[]
            )
            await Trade.filter(trade_id=event.trade_id).update(status="succeeded")

        stage = FetchStage(publisher, before_return=winner_commits_and_trade_moves_on)
        outcomes = await run(stage, entries_of(requested("t0")))
        assert outcomes == {"1-0": None}
        assert await statuses("t0") == {"t0": "succeeded"}

    async def test_a_compute_error_fails_only_its_entry(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        stage = FetchStage(publisher, fail=["t1"])
        outcomes = await run(stage, entries_of(requested("t0"), requested("t1"), requested("t2")))
        assert (outcomes["1-0"], outcomes["3-0"]) == (None, None)
        assert isinstance(outcomes["2-0"], ValueError)
        assert str(outcomes["2-0"]) == "search failed for t1"
        assert await TweetBatch.filter(trade_id="t1").count() == 0
        assert await statuses("t0", "t1", "t2") == {
            "t0": "tweets_fetched",
            "t1": "requested",
            "t2": "tweets_fetched",
        }
        assert sorted(e.trade_id for e in await published(redis)) == ["t0", "t2"]

    async def test_a_record_the_database_refuses_fails_only_its_entry(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        """The batch's one INSERT is refused (a query over the column's 256 characters); the
        rows are then written one by one and only the refused one fails."""
        stage = FetchStage(publisher, unstorable=["t1"])
        outcomes = await run(stage, entries_of(requested("t0"), requested("t1"), requested("t2")))
        assert (outcomes["1-0"], outcomes["3-0"]) == (None, None)
        assert outcomes["2-0"] is not None
        assert sorted(await TweetBatch.all().values_list("trade_id", flat=True)) == ["t0", "t2"]
        assert (await statuses("t1"))["t1"] == "requested"
        assert sorted(e.trade_id for e in await published(redis)) == ["t0", "t2"]

    async def test_a_nul_character_in_a_tweet_does_not_fail_the_batch(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        """PostgreSQL's jsonb refuses \u0000: the tweet schema drops NUL characters."""
        stage = FetchStage(publisher, text="gm\x00 subnet")
        outcomes = await run(stage, entries_of(requested("t0"), requested("t1")))
        assert outcomes == {"1-0": None, "2-0": None}
        stored = await TweetBatch.get(trade_id="t0")
        assert stored.tweets[0].text == "gm subnet"

    async def test_a_slow_compute_fails_only_its_trade(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        async def stall(event: DividendRequested) -> None:
            if event.trade_id == "t1":
                await asyncio.sleep(5)

        stage = FetchStage(publisher, before_return=stall, compute_timeout_s=0.2)
        outcomes = await run(stage, entries_of(requested("t0"), requested("t1")))
        assert outcomes["1-0"] is None
        assert isinstance(outcomes["2-0"], TimeoutError)
        assert [e.trade_id for e in await published(redis)] == ["t0"]

    async def test_a_record_that_ends_the_trade_publishes_nothing_and_says_why(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        stage = FetchStage(publisher, refuse=["t1"])
        outcomes = await run(stage, entries_of(requested("t0"), requested("t1")))
        assert outcomes == {"1-0": None, "2-0": None}
        ended = await Trade.get(trade_id="t1")
        assert (ended.status, ended.reason) == ("ended", "Datura refused the search (quota)")
        assert (await Trade.get(trade_id="t0")).reason is None
        assert [e.trade_id for e in await published(redis)] == ["t0"]


class TestIdentity:
    async def test_the_next_event_carries_the_consumed_identity(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        older = requested("t0", netuid=0, hotkey=ALICE, source="schedule")
        older = older.model_copy(update={"occurred_at": utcnow() - timedelta(minutes=5)})
        events = [older, requested("t1", netuid=65535, hotkey=BOB, source="manual")]
        stage = FetchStage(publisher)
        await run(stage, entries_of(*events))
        sent = {e.trade_id: e for e in await published(redis)}
        for event in events:
            out = sent[event.trade_id]
            assert (out.trade_id, out.netuid, out.hotkey, out.source) == (
                event.trade_id,
                event.netuid,
                event.hotkey,
                event.source,
            )
            assert out.event_id != event.event_id
            assert out.query == f"ours {event.netuid}"
            assert [(t.id, t.like_count) for t in out.tweets] == [(f"{event.netuid}-1", 4)]
            trade = await Trade.get(trade_id=event.trade_id)
            assert (trade.netuid, trade.hotkey, trade.source) == (
                event.netuid,
                event.hotkey,
                event.source,
            )
        first = await Trade.get(trade_id="t0")
        assert abs((first.created_at - older.occurred_at).total_seconds()) < 0.01


class TestInAWorker:
    async def test_a_batch_stage_in_a_worker_publishes_and_dead_letters(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        stage = FetchStage(publisher)
        good = [requested(f"t{n}", netuid=n) for n in range(4)]
        for event in good:
            await redis.xadd(STREAM_DIVIDEND_REQUESTED, event.to_fields())  # type: ignore[arg-type]
        forged = signing.sign(requested("t9").to_fields(), key=b"not-the-event-signing-key")
        forged_id: Any = await redis.xadd(STREAM_DIVIDEND_REQUESTED, forged)  # type: ignore[arg-type]
        seen: list[int] = []

        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            seen.append(len(entries))
            await stage.run(entries, outcomes)

        worker = Worker(
            redis,
            [Stage("kit", STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, batch=batch)],
            block_ms=100,
            claim_every_s=0.05,
        )
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(200):
                if worker.stats["done"] == 4 and worker.stats["dead_lettered"] == 1:
                    break
                await asyncio.sleep(0.02)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)
        assert (worker.stats["done"], worker.stats["dead_lettered"]) == (4, 1)
        assert seen == [5]
        assert sorted(stage.computed) == ["t0", "t1", "t2", "t3"]
        assert sorted(e.trade_id for e in await published(redis)) == ["t0", "t1", "t2", "t3"]
        rows: Any = await redis.xrange(STREAM_DEAD_LETTER)
        ((_, raw),) = rows
        letter = DeadLetter.from_fields(raw)
        assert letter.entry_id == forged_id.decode()
        assert letter.error == "Drop: bad signature in dividend_requested entry"
        assert letter.trade_id == "t9"
        assert await redis.xpending(STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS) == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }


class TestComputeTasks:
    async def test_a_trade_alone_is_computed_in_the_batchs_own_task(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        """No task for one trade: the hop of a lone trade skips two turns of the event loop."""
        ran_in: list[asyncio.Task[Any] | None] = []

        async def where(event: DividendRequested) -> None:
            ran_in.append(asyncio.current_task())

        stage = FetchStage(publisher, before_return=where)
        outcomes = await run(stage, entries_of(requested("t0")))
        assert outcomes == {"1-0": None}
        assert ran_in == [asyncio.current_task()]
        failing = FetchStage(publisher, fail=["t1"])  # its error still ends that entry alone
        outcomes = await run(failing, entries_of(requested("t1")))
        assert isinstance(outcomes["1-0"], ValueError)

    async def test_a_lone_trades_slow_compute_fails_that_entry(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        async def stall(event: DividendRequested) -> None:
            await asyncio.sleep(5)

        stage = FetchStage(publisher, before_return=stall, compute_timeout_s=0.1)
        outcomes = await run(stage, entries_of(requested("t0")))
        assert isinstance(outcomes["1-0"], TimeoutError)
        assert await statuses("t0") == {"t0": "requested"}  # shows while it waits
        assert await published(redis) == []

    async def test_a_lone_trade_cancelled_in_compute_leaves_its_batch_pending(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        started = asyncio.Event()

        async def stall(event: DividendRequested) -> None:
            started.set()
            await asyncio.sleep(5)

        stage = FetchStage(publisher, before_return=stall)
        outcomes: Outcomes = {}
        handler = asyncio.create_task(stage.run(entries_of(requested("t0")), outcomes))
        await started.wait()
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler
        assert outcomes == {}  # no outcome: the entry stays pending, redelivered later
        assert await Trade.all().count() == 0
        assert await published(redis) == []

    async def test_trades_of_one_batch_are_computed_concurrently(
        self, publisher: Publisher, redis: Redis
    ) -> None:
        at_once = HighWater()

        async def overlap(event: DividendRequested) -> None:
            await at_once.hold(0.01)

        stage = FetchStage(publisher, before_return=overlap)
        outcomes = await run(stage, entries_of(requested("t0"), requested("t1"), requested("t2")))
        assert outcomes == {"1-0": None, "2-0": None, "3-0": None}
        assert at_once.most == 3
