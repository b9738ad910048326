"""How a batch's entries are settled, each by its own outcome, through a real Worker on real
Redis: one XACK for the done ones, dead letters for the dropped, pending for the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from pipeline.entries import Drop, Outcomes, Retry, StreamEntry, Unavailable
from shared import signing
from shared.constants import STREAM_DEAD_LETTER
from shared.events import DeadLetter
from tests.pipeline.batching import GROUP, batch_worker, running, text, wait_until

STREAM = "stream:test_acks"
BatchFn = Callable[[Sequence[StreamEntry], Outcomes], Any]


def fields(n: int) -> dict[str, str]:
    return {"type": "test", "trade_id": f"trade-{n}", "netuid": "18", "n": str(n)}


async def add(redis: Redis, count: int) -> list[str]:
    return [text(await redis.xadd(STREAM, fields(n))) for n in range(count)]  # type: ignore[arg-type]


async def pending_ids(redis: Redis) -> set[str]:
    rows = await redis.xpending_range(STREAM, GROUP, min="-", max="+", count=100)
    return {text(row["message_id"]) for row in rows}


async def dead_letters(redis: Redis) -> list[tuple[DeadLetter, dict[str, str]]]:
    rows: Any = await redis.xrange(STREAM_DEAD_LETTER)
    out = []
    for _, raw in rows:
        decoded = {text(k): text(v) for k, v in raw.items()}
        out.append((DeadLetter.from_fields(decoded), decoded))
    return out


class TestOutcomes:
    async def test_each_entry_of_a_batch_is_settled_by_its_own_outcome(self, redis: Redis) -> None:
        calls: list[list[str]] = []

        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            calls.append([e.entry_id for e in entries])
            for entry in entries:
                n = entry.fields["n"]
                outcomes[entry.entry_id] = {
                    "0": Drop("unparseable payload"),
                    "1": Retry("upstream busy"),
                    "2": ValueError("bad row"),
                }.get(n)

        ids = await add(redis, 6)
        worker = batch_worker(redis, STREAM, batch, claim_idle_ms=10_000)
        async with running(worker):
            await wait_until(
                lambda: worker.stats["done"] == 3 and worker.stats["dead_lettered"] == 1,
                what="3 done, 1 dead letter",
            )
        assert calls == [ids]
        assert await pending_ids(redis) == {ids[1], ids[2]}
        assert (worker.stats["retried"], worker.stats["failed"]) == (1, 1)
        ((letter, raw),) = await dead_letters(redis)
        signing.verify(raw)
        assert raw["stream"] == STREAM and "from_stream" not in raw
        assert (letter.from_stream, letter.group, letter.entry_id) == (STREAM, GROUP, ids[0])
        assert letter.error == "Drop: unparseable payload"
        assert letter.deliveries == 1
        assert letter.original_fields == fields(0)
        assert (letter.trade_id, letter.netuid) == ("trade-0", "18")

    async def test_a_raise_after_some_reports_fails_only_the_unreported(self, redis: Redis) -> None:
        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            outcomes[entries[0].entry_id] = None
            outcomes[entries[1].entry_id] = Drop("malformed")
            raise ValueError("bad batch")

        ids = await add(redis, 5)
        worker = batch_worker(redis, STREAM, batch, claim_idle_ms=10_000)
        async with running(worker):
            await wait_until(lambda: worker.stats["failed"] == 3, what="3 failed")
        assert await pending_ids(redis) == set(ids[2:])
        assert (worker.stats["done"], worker.stats["dead_lettered"]) == (1, 1)

    async def test_a_retry_raised_by_the_batch_retries_the_unreported(self, redis: Redis) -> None:
        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            outcomes[entries[0].entry_id] = None
            raise Retry("rate limited")

        ids = await add(redis, 4)
        worker = batch_worker(redis, STREAM, batch, claim_idle_ms=10_000)
        async with running(worker):
            await wait_until(lambda: worker.stats["retried"] == 3, what="3 retried")
        assert await pending_ids(redis) == set(ids[1:])
        assert (worker.stats["done"], worker.stats["failed"]) == (1, 0)

    async def test_an_entry_without_an_outcome_fails_and_is_not_acked(self, redis: Redis) -> None:
        calls: list[list[str]] = []

        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            calls.append([e.entry_id for e in entries])
            for entry in entries:
                if entry.fields["n"] != "1":
                    outcomes[entry.entry_id] = None

        ids = await add(redis, 3)
        # Redelivered, it is over max_deliveries: its dead letter shows the error it failed with.
        worker = batch_worker(redis, STREAM, batch, claim_idle_ms=200, max_deliveries=1)
        async with running(worker):
            await wait_until(
                lambda: worker.stats["failed"] == 1 and worker.stats["done"] == 2, what="settled"
            )
            assert await pending_ids(redis) == {ids[1]}
            await wait_until(lambda: worker.stats["dead_lettered"] == 1, what="dead letter")
        assert calls == [ids]  # not handed to the handler again
        assert worker.stats["done"] == 2
        ((letter, _),) = await dead_letters(redis)
        assert letter.entry_id == ids[1]
        assert letter.error == "RuntimeError: the handler reported no outcome"
        assert letter.deliveries == 2
        assert await pending_ids(redis) == set()

    async def test_a_batch_timeout_fails_the_unreported_and_acks_the_done(
        self, redis: Redis
    ) -> None:
        calls = 0

        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            nonlocal calls
            calls += 1
            outcomes[entries[0].entry_id] = None
            outcomes[entries[1].entry_id] = None
            await asyncio.sleep(5)

        ids = await add(redis, 5)
        worker = batch_worker(
            redis, STREAM, batch, handler_timeout_s=0.2, claim_idle_ms=600, max_deliveries=1
        )
        async with running(worker):
            await wait_until(
                lambda: worker.stats["done"] == 2 and worker.stats["failed"] == 3, what="settled"
            )
            assert await pending_ids(redis) == set(ids[2:])
            await wait_until(lambda: worker.stats["dead_lettered"] == 3, what="dead letters")
        assert calls == 1
        letters = await dead_letters(redis)
        assert sorted(letter.entry_id for letter, _ in letters) == ids[2:]
        assert {letter.error for letter, _ in letters} == {"handler timed out after 0.2 s"}


class TestOutages:
    async def test_an_outage_is_retried_in_place_for_that_entry_only(self, redis: Redis) -> None:
        calls: list[list[str]] = []
        deliveries: list[int] = []
        outage_tries = 2

        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            nonlocal outage_tries
            calls.append([e.fields["n"] for e in entries])
            for entry in entries:
                deliveries.append(entry.deliveries)
                if entry.fields["n"] == "0" and outage_tries > 0:
                    outage_tries -= 1
                    outcomes[entry.entry_id] = Unavailable("Datura answered 503")
                else:
                    outcomes[entry.entry_id] = None

        await add(redis, 4)
        worker = batch_worker(
            redis, STREAM, batch, claim_idle_ms=200, max_deliveries=1, outage_backoff_s=(0.01, 0.02)
        )
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 4, what="4 done")
        assert calls == [["0", "1", "2", "3"], ["0"], ["0"]]
        assert set(deliveries) == {1}  # no delivery spent on the outage
        assert worker.stats["outage_waits"] == 2
        assert (worker.stats["reclaimed"], worker.stats["failed"]) == (0, 0)
        assert await pending_ids(redis) == set()
        assert await dead_letters(redis) == []

    async def test_the_others_are_acked_while_one_entry_waits_out_its_outage(
        self, redis: Redis
    ) -> None:
        recovered = asyncio.Event()

        async def batch(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
            for entry in entries:
                down = entry.fields["n"] == "0" and not recovered.is_set()
                outcomes[entry.entry_id] = Unavailable("chain unreachable") if down else None

        ids = await add(redis, 4)
        worker = batch_worker(
            redis, STREAM, batch, claim_idle_ms=10_000, outage_backoff_s=(0.02, 0.05)
        )
        async with running(worker):
            await wait_until(lambda: worker.stats["outage_waits"] >= 1, what="outage")
            try:
                await wait_until(
                    lambda: _only_pending(redis, ids[0]), timeout=1.5, what="others acked"
                )
            finally:
                recovered.set()
            await wait_until(lambda: worker.stats["done"] == 4, what="4 done")
        assert await pending_ids(redis) == set()


async def _only_pending(redis: Redis, entry_id: str) -> bool:
    return await pending_ids(redis) == {entry_id}
