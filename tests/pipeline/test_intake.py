"""What the intake hands a batch stage, through a real Worker on real Redis: several entries
per read (never more than free slots or `batch`), reclaimed entries as one batch, entries
that can never be handled kept from the handler, and a blocked reader's connection known
to `stop` without a round trip before every read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

from pipeline.entries import Outcomes, StreamEntry
from pipeline.intake import _ReaderConnection
from shared.constants import STREAM_DEAD_LETTER
from tests.pipeline.batching import GROUP, batch_worker, running, text, wait_until

STREAM = "stream:test_intake"


def fields(n: int) -> dict[str, str]:
    return {"type": "test", "trade_id": f"trade-{n}", "n": str(n)}


async def add(redis: Redis, count: int, start: int = 0) -> list[str]:
    return [
        text(await redis.xadd(STREAM, fields(n)))  # type: ignore[arg-type]
        for n in range(start, start + count)
    ]


async def pending(redis: Redis) -> int:
    return int((await redis.xpending(STREAM, GROUP))["pending"])


class Recorder:
    """A batch handler that reports every entry done and remembers each call."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.calls: list[list[StreamEntry]] = []
        self.hold_s = hold_s

    async def __call__(self, entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
        self.calls.append(list(entries))
        await asyncio.sleep(self.hold_s)
        for entry in entries:
            outcomes[entry.entry_id] = None

    @property
    def sizes(self) -> list[int]:
        return [len(call) for call in self.calls]

    @property
    def handled(self) -> list[str]:
        return [entry.entry_id for call in self.calls for entry in call]


class TestReads:
    async def test_one_read_hands_a_batch_stage_all_queued_entries_in_one_call(
        self, redis: Redis
    ) -> None:
        handler = Recorder()
        ids = await add(redis, 10)
        worker = batch_worker(redis, STREAM, handler, concurrency=32, batch=32)
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 10, what="10 done")
        assert handler.sizes == [10]
        assert handler.handled == ids
        first = handler.calls[0][0]
        assert (first.stream, first.group, first.fields, first.deliveries) == (
            STREAM,
            GROUP,
            fields(0),
            1,
        )
        assert await pending(redis) == 0

    async def test_a_read_takes_no_more_entries_than_free_slots(self, redis: Redis) -> None:
        handler = Recorder(hold_s=0.05)
        ids = await add(redis, 10)
        worker = batch_worker(redis, STREAM, handler, concurrency=4, batch=32)
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 10, what="10 done")
        assert handler.sizes[0] == 4
        assert max(handler.sizes) <= 4
        assert sorted(handler.handled) == sorted(ids)

    async def test_a_read_takes_no_more_than_batch(self, redis: Redis) -> None:
        handler = Recorder()
        ids = await add(redis, 10)
        worker = batch_worker(redis, STREAM, handler, concurrency=32, batch=3)
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 10, what="10 done")
        assert handler.sizes[:3] == [3, 3, 3]
        assert max(handler.sizes) == 3
        assert sorted(handler.handled) == sorted(ids)

    async def test_entries_arriving_while_idle_are_handled(self, redis: Redis) -> None:
        handler = Recorder()
        worker = batch_worker(redis, STREAM, handler)
        async with running(worker):
            await asyncio.sleep(0.2)  # blocked on an empty stream
            ids = await add(redis, 5)
            await wait_until(lambda: worker.stats["done"] == 5, what="5 done")
        assert sorted(handler.handled) == sorted(ids)
        assert await pending(redis) == 0

    async def test_an_undecodable_entry_never_reaches_the_batch(self, redis: Redis) -> None:
        handler = Recorder()
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        good = await add(redis, 2)
        bad = text(await redis.xadd(STREAM, {"trade_id": "t-bad", "n": b"\xff"}))
        good += await add(redis, 2, start=3)
        worker = batch_worker(redis, STREAM, handler)
        async with running(worker):
            await wait_until(
                lambda: worker.stats["done"] == 4 and worker.stats["dead_lettered"] == 1,
                what="settled",
            )
        assert handler.sizes == [4]
        assert handler.handled == good
        rows: Any = await redis.xrange(STREAM_DEAD_LETTER)
        ((_, letter),) = rows
        assert text(letter[b"entry_id"]) == bad
        assert text(letter[b"error"]) == "Drop: fields are not valid UTF-8: n"
        assert await pending(redis) == 0


class TestReclaim:
    async def test_entries_of_a_dead_consumer_are_reclaimed_as_one_batch(
        self, redis: Redis
    ) -> None:
        handler = Recorder()
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        ids = await add(redis, 4)
        await redis.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"})  # pending there
        await redis.xdel(STREAM, ids[1])  # deleted while pending: nothing to hand over
        worker = batch_worker(redis, STREAM, handler, claim_idle_ms=100)
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 3, what="3 done")
            await asyncio.sleep(0.2)  # the deleted one is not handed over late
        assert handler.sizes == [3]
        assert handler.handled == [ids[0], ids[2], ids[3]]
        assert {entry.deliveries for entry in handler.calls[0]} == {2}
        assert worker.stats["reclaimed"] == 3
        assert await pending(redis) == 0

    async def test_entries_over_max_deliveries_are_dead_lettered_the_rest_handled(
        self, redis: Redis
    ) -> None:
        handler = Recorder()
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        worn, fresh = await add(redis, 2)
        await redis.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"})
        for _ in range(2):  # `worn` delivered three times in all
            await redis.xclaim(STREAM, GROUP, "dead-consumer", 0, [worn])
        worker = batch_worker(redis, STREAM, handler, claim_idle_ms=100, max_deliveries=3)
        async with running(worker):
            await wait_until(
                lambda: worker.stats["done"] == 1 and worker.stats["dead_lettered"] == 1,
                what="settled",
            )
        assert handler.handled == [fresh]
        rows: Any = await redis.xrange(STREAM_DEAD_LETTER)
        ((_, letter),) = rows
        assert text(letter[b"entry_id"]) == worn
        assert text(letter[b"error"]) == "exceeded MAX_DELIVERIES"
        assert text(letter[b"deliveries"]) == "4"
        assert await pending(redis) == 0


async def blocked_readers(redis: Redis) -> list[int]:
    """CLIENT IDs of the connections blocked in an XREADGROUP on this test's database."""
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    clients: Any = await redis.client_list()
    return [
        int(c["id"])
        for c in clients
        if c["cmd"] == "xreadgroup" and "b" in c["flags"] and int(c["db"]) == db
    ]


class TestBlockedReader:
    async def test_its_client_id_is_asked_once_not_before_every_blocking_read(
        self, redis: Redis, monkeypatch: Any
    ) -> None:
        asked = 0
        client_id = Redis.client_id

        async def counting(self: Redis) -> Any:
            nonlocal asked
            asked += 1
            return await client_id(self)

        monkeypatch.setattr(Redis, "client_id", counting)
        worker = batch_worker(redis, STREAM, Recorder(), block_ms=50)
        async with running(worker):
            await asyncio.sleep(0.6)  # about a dozen blocking reads time out
            await add(redis, 1)  # a read that returns entries, then blocking reads again
            await wait_until(lambda: worker.stats["done"] == 1, what="1 done")
            await asyncio.sleep(0.2)
        assert asked == 1

    async def test_stop_unblocks_a_reader_whose_connection_was_replaced(self, redis: Redis) -> None:
        worker = batch_worker(redis, STREAM, Recorder(), block_ms=5000)
        task = asyncio.create_task(worker.run())
        try:
            await wait_until(lambda: blocked_readers(redis), what="a blocked reader")
            (first,) = await blocked_readers(redis)
            await redis.client_kill_filter(_id=first)  # the reader reconnects and blocks again
            await wait_until(
                lambda: _other_blocked_reader(redis, first), what="a new blocked reader"
            )
            started = time.monotonic()
            worker.stop()
            await asyncio.wait_for(task, 10)
            # Unblocked by its new id at once, not cancelled after BLOCK (5 s) + slack.
            assert time.monotonic() - started < 1.0
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)


async def _other_blocked_reader(redis: Redis, old: int) -> bool:
    return any(i != old for i in await blocked_readers(redis))


class TestReaderConnection:
    async def test_a_dropped_connection_forgets_its_id_before_the_next_block(
        self, redis: Redis
    ) -> None:
        reader = _ReaderConnection(redis)
        try:
            await reader.ask_id()
            first = reader.id
            await redis.client_kill_filter(_id=first)
            with contextlib.suppress(RedisError, OSError):
                await reader.client.ping()  # the drop is seen (a blocked read would see it)
            await reader.ask_id()
            assert reader.id != first
            assert reader.id == int(await reader.client.client_id())
        finally:
            await reader.aclose()

    async def test_a_closed_reader_leaves_no_callback_on_the_pooled_connection(
        self, redis: Redis, redis_url: str
    ) -> None:
        pool = ConnectionPool.from_url(redis_url, max_connections=1)  # one connection, reused
        shared = Redis(connection_pool=pool)
        try:
            reader = _ReaderConnection(shared)
            await reader.ask_id()
            first = reader.id
            await reader.aclose()
            await redis.client_kill_filter(_id=first)  # its next user reconnects it
            for _ in range(3):
                with contextlib.suppress(RedisError, OSError):
                    await shared.ping()
            assert reader.id == first  # no CLIENT ID ran for the closed reader
        finally:
            await shared.aclose()
            await pool.aclose()
