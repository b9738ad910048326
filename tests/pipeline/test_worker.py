"""The stream consumer loop on real Redis: ack, bounds, retries, dead letters, crashes, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from loguru import logger
from redis.asyncio import Redis

from pipeline.worker import Drop, Job, Retry, Stage, StreamEntry, Unavailable, Worker
from shared.constants import KEY_WORKER_HEALTH, STREAM_DEAD_LETTER
from tests.concurrency import HighWater
from tests.conftest import private_redis

STREAM = "stream:test_worker"
GROUP = "testers"
ROOT = Path(__file__).resolve().parents[2]
FAST: dict[str, Any] = {"block_ms": 100, "claim_idle_ms": 60, "claim_every_s": 0.05}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def dead_letters(redis: Redis) -> list[dict[str, str]]:
    rows: Any = await redis.xrange(STREAM_DEAD_LETTER)
    return [{text(k): text(v) for k, v in row[1].items()} for row in rows]


async def unread_ids(redis: Redis) -> list[str]:
    """What a fresh consumer of the group would be given next."""
    reply: Any = await redis.xreadgroup(GROUP, "next", {STREAM: ">"})
    return [text(row[0]) for row in reply[0][1]]


def fields(n: int, **extra: str) -> dict[str, str]:
    return {"type": "test", "trade_id": f"trade-{n}", "netuid": "18", "n": str(n), **extra}


async def add(redis: Redis, count: int, stream: str = STREAM, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        entry_id = await redis.xadd(stream, fields(n))  # type: ignore[arg-type]
        ids.append(text(entry_id))
    return ids


async def wait_until(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def pending(redis: Redis, stream: str = STREAM, group: str = GROUP) -> int:
    return int((await redis.xpending(stream, group))["pending"])


@contextlib.asynccontextmanager
async def running(worker: Worker, stop_timeout: float = 10.0) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, stop_timeout)


def make_worker(redis: Redis, handler: Any, **options: Any) -> Worker:
    settings = {**FAST, **options}
    return Worker(redis, [Stage("test", STREAM, GROUP, handler)], **settings)


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        record = message.record
        records.append({"msg": record["message"], "level": record["level"].name, **record["extra"]})

    sink_id = logger.add(sink, level="DEBUG")
    yield records
    logger.remove(sink_id)


class TestHandling:
    async def test_entries_are_handled_once_and_acked(self, redis: Redis) -> None:
        seen: list[StreamEntry] = []

        async def handler(entry: StreamEntry) -> None:
            seen.append(entry)

        ids = await add(redis, 50)
        worker = make_worker(redis, handler)
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 50, what="50 done")
            assert await pending(redis) == 0
        assert sorted(e.entry_id for e in seen) == sorted(ids)
        first = next(e for e in seen if e.entry_id == ids[0])
        assert first == StreamEntry(STREAM, GROUP, ids[0], fields(0), 1)
        assert worker.stats == {
            "done": 50,
            "retried": 0,
            "dead_lettered": 0,
            "reclaimed": 0,
            "failed": 0,
            "outage_waits": 0,
        }

    async def test_concurrency_bound_is_respected_and_reached(self, redis: Redis) -> None:
        active = 0
        max_active = 0
        max_pending = 0

        async def handler(entry: StreamEntry) -> None:
            nonlocal active, max_active, max_pending
            active += 1
            max_active = max(max_active, active)
            # Entries delivered to the group but not acked: the reader must not take
            # more than it can start, so this never exceeds the concurrency either.
            max_pending = max(max_pending, await pending(redis))
            await asyncio.sleep(0.03)
            active -= 1

        await add(redis, 40)
        worker = make_worker(redis, handler, concurrency=4, batch=10)
        async with running(worker):
            await wait_until(lambda: worker.stats["done"] == 40, what="40 done")
        assert max_active == 4
        assert 1 <= max_pending <= 4

    async def test_two_workers_share_a_group_without_double_handling(self, redis: Redis) -> None:
        handled: Counter[str] = Counter()
        by_worker: Counter[str] = Counter()

        def handler_for(name: str) -> Any:
            async def handler(entry: StreamEntry) -> None:
                await asyncio.sleep(0.005)
                handled[entry.entry_id] += 1
                by_worker[name] += 1

            return handler

        one = make_worker(redis, handler_for("one"), concurrency=2, consumer="one")
        two = make_worker(redis, handler_for("two"), concurrency=2, consumer="two")
        async with running(one), running(two):
            await asyncio.sleep(0.2)  # both blocked on the group before entries arrive
            ids = await add(redis, 100)
            await wait_until(lambda: len(handled) == 100, what="100 handled")
            await asyncio.sleep(0.3)  # a double delivery would show up by now
            assert await pending(redis) == 0
        assert set(handled) == set(ids)
        assert set(handled.values()) == {1}
        assert by_worker["one"] > 0 and by_worker["two"] > 0
        assert one.stats["done"] + two.stats["done"] == 100

    async def test_slow_handler_is_not_reclaimed_while_running(self, redis: Redis) -> None:
        calls: Counter[str] = Counter()

        async def handler(entry: StreamEntry) -> None:
            calls[entry.entry_id] += 1
            await asyncio.sleep(0.6)  # ten times claim_idle_ms

        options = {"claim_idle_ms": 60, "claim_every_s": 0.02}
        one = make_worker(redis, handler, consumer="one", **options)
        two = make_worker(redis, handler, consumer="two", **options)
        async with running(one), running(two):
            (entry_id,) = await add(redis, 1)
            await wait_until(lambda: one.stats["done"] + two.stats["done"] == 1, what="done")
        assert calls == {entry_id: 1}
        assert one.stats["reclaimed"] + two.stats["reclaimed"] == 0

    async def test_stages_share_one_concurrency_bound(self, redis: Redis) -> None:
        at_once = HighWater()
        done: Counter[str] = Counter()

        async def handler(entry: StreamEntry) -> None:
            await at_once.hold(0.02)
            done[entry.stream] += 1

        other = f"{STREAM}:other"
        stages = [Stage("a", STREAM, GROUP, handler), Stage("b", other, GROUP, handler)]
        worker = Worker(redis, stages, concurrency=4, batch=8, **FAST)
        async with running(worker):
            await add(redis, 20)
            await add(redis, 20, stream=other)
            await wait_until(lambda: worker.stats["done"] == 40, what="40 done")
        assert done == {STREAM: 20, other: 20}
        assert 2 <= at_once.most <= 4


class TestRetries:
    async def test_retry_and_failure_are_redelivered_until_success(
        self, redis: Redis, log_records: list[dict[str, Any]]
    ) -> None:
        deliveries: list[int] = []

        async def handler(entry: StreamEntry) -> None:
            deliveries.append(entry.deliveries)
            if len(deliveries) == 1:
                raise Retry("upstream busy")
            if len(deliveries) == 2:
                raise RuntimeError("boom")

        worker = make_worker(redis, handler)
        async with running(worker):
            (entry_id,) = await add(redis, 1)
            await wait_until(lambda: worker.stats["done"] == 1, what="done")
            assert await pending(redis) == 0
        assert deliveries == [1, 2, 3]
        assert worker.stats["retried"] == 1
        assert worker.stats["failed"] == 1
        assert worker.stats["reclaimed"] == 2
        outcomes = [
            (r["msg"], r["deliveries"], r["trade_id"])
            for r in log_records
            if r.get("entry_id") == entry_id
            and r["msg"] in {"entry retry", "entry failed", "entry done"}
        ]
        assert outcomes == [
            ("entry retry", 1, "trade-0"),
            ("entry failed", 2, "trade-0"),
            ("entry done", 3, "trade-0"),
        ]

    async def test_retry_defer_hint_shortens_the_wait_plain_errors_keep_it(
        self, redis: Redis
    ) -> None:
        attempts: Counter[str] = Counter()
        first_at: dict[str, float] = {}
        second_at: dict[str, float] = {}

        async def handler(entry: StreamEntry) -> None:
            attempts[entry.entry_id] += 1
            if attempts[entry.entry_id] == 1:
                first_at[entry.entry_id] = time.monotonic()
                if entry.fields["n"] == "0":
                    raise Retry("rate limited", defer_s=0.3)
                raise RuntimeError("plain failure")
            second_at[entry.entry_id] = time.monotonic()

        worker = make_worker(redis, handler, claim_idle_ms=10_000, claim_every_s=0.05)
        async with running(worker):
            deferred, plain = await add(redis, 2)
            await wait_until(lambda: worker.stats["done"] == 1, timeout=3, what="deferred done")
            await asyncio.sleep(0.3)
            assert attempts == {deferred: 2, plain: 1}  # the plain one waits claim_idle_ms
        delay = second_at[deferred] - first_at[deferred]
        assert 0.25 <= delay < 1.5

    async def test_handler_timeout_counts_as_failure(self, redis: Redis) -> None:
        deliveries: list[int] = []

        async def handler(entry: StreamEntry) -> None:
            deliveries.append(entry.deliveries)
            if entry.deliveries == 1:
                await asyncio.sleep(5)

        worker = make_worker(redis, handler, handler_timeout_s=0.1)
        async with running(worker):
            await add(redis, 1)
            await wait_until(lambda: worker.stats["done"] == 1, what="done")
        assert deliveries == [1, 2]
        assert worker.stats["failed"] == 1


class TestOutages:
    async def test_dependency_outage_is_waited_out_without_spending_deliveries(
        self, redis: Redis
    ) -> None:
        """An outage longer than MAX_DELIVERIES tries used to dead-letter every entry."""
        tries: Counter[str] = Counter()

        async def handler(entry: StreamEntry) -> None:
            tries[entry.entry_id] += 1
            if tries[entry.entry_id] <= 6:
                raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

        worker = make_worker(redis, handler, max_deliveries=2, outage_backoff_s=(0.01, 0.05))
        async with running(worker):
            ids = await add(redis, 3)
            await wait_until(lambda: worker.stats["done"] == 3, what="all done")
        assert await dead_letters(redis) == []
        assert await pending(redis) == 0
        assert all(tries[i] == 7 for i in ids)
        assert worker.stats["outage_waits"] == 18
        assert worker.stats["failed"] == 0 and worker.stats["reclaimed"] == 0

    async def test_a_fault_that_is_not_an_outage_still_spends_deliveries(
        self, redis: Redis
    ) -> None:
        async def handler(entry: StreamEntry) -> None:
            raise ValueError("bad row")

        worker = make_worker(redis, handler, max_deliveries=2, outage_backoff_s=(0.01, 0.05))
        async with running(worker):
            await add(redis, 1)
            await wait_until(lambda: worker.stats["dead_lettered"] == 1, what="dead letter")
        assert worker.stats["outage_waits"] == 0

    async def test_explicit_unavailable_is_an_outage(self, redis: Redis) -> None:
        calls = 0

        async def handler(entry: StreamEntry) -> None:
            nonlocal calls
            calls += 1
            if calls < 4:
                raise Unavailable("Datura answered 503 after 3 tries")

        worker = make_worker(redis, handler, max_deliveries=1, outage_backoff_s=(0.01, 0.02))
        async with running(worker):
            await add(redis, 1)
            await wait_until(lambda: worker.stats["done"] == 1, what="done")
        assert calls == 4 and worker.stats["outage_waits"] == 3

    async def test_outage_waits_double_to_the_cap_without_jitter(
        self, redis: Redis, log_records: list[dict[str, Any]]
    ) -> None:
        calls = 0

        async def handler(entry: StreamEntry) -> None:
            nonlocal calls
            calls += 1
            if calls <= 5:
                raise ConnectionRefusedError(111, "Connect call failed")

        worker = make_worker(redis, handler, outage_backoff_s=(0.01, 0.04))
        async with running(worker):
            await add(redis, 1)
            await wait_until(lambda: worker.stats["done"] == 1, what="done")
        waits = [r["retry_in_s"] for r in log_records if r["msg"].startswith("dependency")]
        assert waits == [0.01, 0.02, 0.04, 0.04, 0.04]

    async def test_stop_during_an_outage_leaves_the_entry_pending(self, redis: Redis) -> None:
        async def handler(entry: StreamEntry) -> None:
            raise ConnectionResetError("reset by peer")

        worker = make_worker(redis, handler, outage_backoff_s=(0.05, 0.05))
        async with running(worker):
            await add(redis, 1)
            await wait_until(lambda: worker.stats["outage_waits"] >= 2, what="waiting")
        assert await pending(redis) == 1
        assert await dead_letters(redis) == []


class TestDeadLetter:
    async def test_poison_entry_dead_letters_once_after_max_deliveries(self, redis: Redis) -> None:
        calls = 0

        async def handler(entry: StreamEntry) -> None:
            nonlocal calls
            calls += 1
            raise ValueError(f"cannot parse (attempt {calls}) Authorization: Bearer abc.def-42")

        worker = make_worker(redis, handler, max_deliveries=3)
        async with running(worker):
            (entry_id,) = await add(redis, 1)
            await wait_until(lambda: worker.stats["dead_lettered"] == 1, what="dead letter")
            await asyncio.sleep(0.3)  # no second dead letter, no further call
            assert await pending(redis) == 0
        assert calls == 3
        assert worker.stats["failed"] == 3
        letters = await dead_letters(redis)
        assert len(letters) == 1
        letter = letters[0]
        assert letter["type"] == "dead_letter"
        assert letter["stream"] == STREAM
        assert letter["group"] == GROUP
        assert letter["entry_id"] == entry_id
        assert letter["deliveries"] == "4"  # the fourth delivery is the one dead-lettered
        assert letter["error"] == "ValueError: cannot parse (attempt 3) Authorization: Bearer ***"
        assert orjson.loads(letter["original"]) == fields(0)
        assert (letter["trade_id"], letter["netuid"]) == ("trade-0", "18")
        assert "hotkey" not in letter and "source" not in letter  # absent in the original
        assert len(letter["event_id"]) == 32
        assert letter["occurred_at"].endswith("Z")

    async def test_non_utf8_entry_is_dead_lettered_and_its_neighbours_complete(
        self, redis: Redis
    ) -> None:
        """One undecodable entry used to fail the whole read: it and the healthy entries
        read with it stayed pending for ever (delivery count 7 with MAX_DELIVERIES 2)."""
        handled: list[str] = []

        async def handler(entry: StreamEntry) -> None:
            handled.append(entry.fields["n"])

        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        await redis.xadd(STREAM, fields(0))  # type: ignore[arg-type]
        poison_id = text(await redis.xadd(STREAM, {"trade_id": "t-bad", "n": b"\xff\xfe"}))
        await redis.xadd(STREAM, fields(2))  # type: ignore[arg-type]
        worker = make_worker(redis, handler, max_deliveries=2)
        async with running(worker):
            await wait_until(lambda: worker.stats["dead_lettered"] == 1, what="dead letter")
            await wait_until(lambda: len(handled) == 2, what="healthy entries")
            await asyncio.sleep(0.2)
            assert await pending(redis) == 0
        assert sorted(handled) == ["0", "2"]
        (letter,) = await dead_letters(redis)
        assert letter["entry_id"] == poison_id
        assert letter["error"] == "Drop: fields are not valid UTF-8: n"
        assert letter["deliveries"] == "1"

    async def test_non_utf8_entry_reclaimed_from_a_dead_consumer_is_dead_lettered(
        self, redis: Redis
    ) -> None:
        async def handler(entry: StreamEntry) -> None:
            raise AssertionError("an undecodable entry must never reach the handler")

        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        poison_id = text(await redis.xadd(STREAM, {b"\xc3(": b"x", "trade_id": "t-bad"}))
        await redis.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"})  # now pending there
        worker = make_worker(redis, handler, max_deliveries=2)
        async with running(worker):
            await wait_until(lambda: worker.stats["dead_lettered"] == 1, what="dead letter")
            assert await pending(redis) == 0
        (letter,) = await dead_letters(redis)
        assert letter["entry_id"] == poison_id
        assert letter["error"].startswith("Drop: fields are not valid UTF-8")
        assert worker.stats["failed"] == 0

    async def test_drop_dead_letters_at_once(self, redis: Redis) -> None:
        calls = 0

        async def handler(entry: StreamEntry) -> None:
            nonlocal calls
            calls += 1
            raise Drop("netuid 99999 out of range")

        worker = make_worker(redis, handler)
        async with running(worker):
            extra = {"hotkey": "5F...", "source": "api"}
            entry_id = text(await redis.xadd(STREAM, fields(7, **extra)))  # type: ignore[arg-type]
            await wait_until(lambda: worker.stats["dead_lettered"] == 1, what="dead letter")
            await asyncio.sleep(0.2)
            assert await pending(redis) == 0
        assert calls == 1
        letters = await dead_letters(redis)
        assert len(letters) == 1
        letter = letters[0]
        assert letter["error"] == "Drop: netuid 99999 out of range"
        assert letter["deliveries"] == "1"
        assert letter["entry_id"] == entry_id
        assert (letter["hotkey"], letter["source"]) == ("5F...", "api")

    async def test_deleted_pending_entry_is_cleared_without_calling_the_handler(
        self, redis: Redis
    ) -> None:
        calls = 0

        async def handler(entry: StreamEntry) -> None:
            nonlocal calls
            calls += 1

        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        (gone_id,) = await add(redis, 1)
        await redis.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=10)  # a consumer that died
        await redis.xdel(STREAM, gone_id)
        worker = make_worker(redis, handler)
        async with running(worker):
            await wait_until(lambda: _zero(redis), what="PEL empty")
        assert calls == 0
        assert worker.stats["reclaimed"] == 0


async def _zero(redis: Redis) -> bool:
    return await pending(redis) == 0


class TestLifecycle:
    async def test_health_key_lives_while_running_and_goes_on_clean_stop(
        self, redis: Redis
    ) -> None:
        async def handler(entry: StreamEntry) -> None:
            return None

        worker = make_worker(redis, handler, health_ttl_s=1, consumer="healthy-1")
        key = f"{KEY_WORKER_HEALTH}healthy-1"
        async with running(worker):
            await add(redis, 3)
            await wait_until(lambda: worker.stats["done"] == 3, what="done")
            await asyncio.sleep(1.5)  # longer than the TTL: it is refreshed
            ttl = await redis.pttl(key)
            assert 0 < ttl <= 1000
            health = orjson.loads(text(await redis.get(key)))
            assert health["stages"] == ["test"]
            assert health["pid"] == os.getpid()
            assert health["started_at"].endswith("Z")
            assert health["stats"]["done"] == 3
        assert await redis.exists(key) == 0

    async def test_stop_returns_promptly_despite_a_long_block(self, redis: Redis) -> None:
        async def handler(entry: StreamEntry) -> None:
            return None

        worker = make_worker(redis, handler, block_ms=5000, consumer="idle-1")
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)  # blocked in XREADGROUP by now
        began = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - began < 0.5
        (entry_id,) = await add(redis, 1)
        await asyncio.sleep(0.1)
        assert await pending(redis) == 0  # the stopped worker took nothing
        assert worker.stats["done"] == 0
        assert await unread_ids(redis) == [entry_id]

    async def test_second_stop_abandons_the_drain_and_leaves_the_entry_pending(
        self, redis: Redis
    ) -> None:
        began: list[str] = []

        async def handler(entry: StreamEntry) -> None:
            began.append(entry.entry_id)
            await asyncio.sleep(30)

        worker = make_worker(redis, handler, shutdown_grace_s=30)
        task = asyncio.create_task(worker.run())
        (entry_id,) = await add(redis, 1)
        await wait_until(lambda: began == [entry_id], what="handler start")
        worker.stop()
        await asyncio.sleep(0.2)
        assert not task.done()  # draining: waits for the handler
        worker.stop()
        await asyncio.wait_for(task, 2)
        assert await pending(redis) == 1  # left for another consumer to reclaim
        assert worker.stats["done"] == 0

    async def test_group_is_recreated_when_the_stream_is_deleted(self, redis: Redis) -> None:
        handled: list[str] = []

        async def handler(entry: StreamEntry) -> None:
            handled.append(entry.fields["n"])

        worker = make_worker(redis, handler)
        async with running(worker):
            await add(redis, 1)
            await wait_until(lambda: handled == ["0"], what="first")
            await redis.delete(STREAM)
            await asyncio.sleep(0.3)
            await add(redis, 2, start=1)
            await wait_until(lambda: len(handled) == 3, what="after delete")
            assert await pending(redis) == 0
        assert handled == ["0", "1", "2"]

    async def test_survives_a_redis_outage(self) -> None:
        handled: list[str] = []

        async def handler(entry: StreamEntry) -> None:
            handled.append(entry.fields["n"])

        with private_redis() as (url, server):
            port = url.rsplit(":", 1)[1].split("/")[0]
            client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=0.5)
            worker = make_worker(client, handler)
            replacement: subprocess.Popen[bytes] | None = None
            try:
                async with running(worker) as task:
                    await add(client, 1)
                    await wait_until(lambda: handled == ["0"], what="before outage")
                    server.kill()
                    server.wait()
                    await asyncio.sleep(1.0)
                    assert not task.done()
                    replacement = _redis_server(int(port))
                    await wait_until(_pinging(client), timeout=5, what="restart")
                    await add(client, 2, start=1)  # the restarted server lost the group
                    await wait_until(lambda: len(handled) == 3, timeout=10, what="after outage")
            finally:
                await client.aclose()
                if replacement is not None:
                    replacement.kill()
                    replacement.wait()
        assert handled == ["0", "1", "2"]


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    return subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )


def _pinging(client: Redis) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            return bool(await client.ping())
        except Exception:
            return False

    return check


def test_block_must_stay_below_the_socket_timeout() -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/15", socket_timeout=1.0)

    async def handler(entry: StreamEntry) -> None:
        return None

    with pytest.raises(ValueError, match="socket_timeout"):
        Worker(client, [Stage("t", STREAM, GROUP, handler)], block_ms=1000)
    Worker(client, [Stage("t", STREAM, GROUP, handler)], block_ms=500)


def test_outage_backoff_bounds_must_be_positive() -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/15")

    async def handler(entry: StreamEntry) -> None:
        return None

    with pytest.raises(ValueError, match="backoff waits"):
        Worker(client, [Stage("t", STREAM, GROUP, handler)], outage_backoff_s=(0.0, 1.0))


# ------------------------------------------------------------------ subprocesses


def spawn(redis_url: str, consumer: str, tmp_path: Path, **options: Any) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "tests.pipeline.worker_proc",
        redis_url,
        STREAM,
        GROUP,
        consumer,
        "proc",
    ]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    log = (tmp_path / f"{consumer}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def started(redis: Redis) -> list[str]:
    return [text(v) for v in await redis.lrange("proc:started", 0, -1)]


async def completed(redis: Redis) -> dict[str, int]:
    return {text(k): int(v) for k, v in (await redis.hgetall("proc:completed")).items()}


class TestProcesses:
    async def test_sigkill_mid_handler_is_reclaimed_and_completed_once(
        self, redis: Redis, redis_url: str, tmp_path: Path
    ) -> None:
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        proc = spawn(redis_url, "doomed", tmp_path, sleep=30, claim_idle_ms=300)
        try:
            (entry_id,) = await add(redis, 1)
            await wait_until(lambda: _started_n(redis, 1), timeout=10, what="proc start")

            async def handler(entry: StreamEntry) -> None:
                await redis.rpush("proc:started", f"survivor|{entry.entry_id}")
                await redis.hincrby("proc:completed", entry.entry_id, 1)

            survivor = make_worker(
                redis, handler, consumer="survivor", claim_idle_ms=300, claim_every_s=0.05
            )
            async with running(survivor):
                await asyncio.sleep(1.0)  # the living process keeps its entry
                assert await started(redis) == [f"doomed|{entry_id}"]
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
                await wait_until(lambda: survivor.stats["done"] == 1, timeout=5, what="reclaim")
                await asyncio.sleep(0.5)
                assert await pending(redis) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert await started(redis) == [f"doomed|{entry_id}", f"survivor|{entry_id}"]
        assert await completed(redis) == {entry_id: 1}
        assert survivor.stats["reclaimed"] == 1

    async def test_sigterm_drains_in_flight_and_takes_nothing_new(
        self, redis: Redis, redis_url: str, tmp_path: Path
    ) -> None:
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        proc = spawn(redis_url, "graceful", tmp_path, sleep=1.0, grace=5)
        try:
            await wait_until(
                lambda: _exists(redis, f"{KEY_WORKER_HEALTH}graceful"), timeout=10, what="ready"
            )
            first = await add(redis, 3)
            await wait_until(lambda: _started_n(redis, 3), timeout=5, what="3 started")
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # The signal is handled asynchronously: "after the signal" means once the
            # worker says it stopped intake (health key flag), not once kill() returned.
            await wait_until(lambda: _stopping(redis, "graceful"), timeout=3, what="stopping")
            later = await add(redis, 2, start=3)
            rc = await asyncio.to_thread(proc.wait, 10)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert rc == 0
        assert took < 5
        assert await completed(redis) == dict.fromkeys(first, 1)
        assert len(await started(redis)) == 3
        assert await pending(redis) == 0
        assert await redis.exists(f"{KEY_WORKER_HEALTH}graceful") == 0
        assert await unread_ids(redis) == later


async def _started_n(redis: Redis, n: int) -> bool:
    return len(await started(redis)) >= n


async def _stopping(redis: Redis, consumer: str) -> bool:
    raw = await redis.get(f"{KEY_WORKER_HEALTH}{consumer}")
    return raw is not None and bool(orjson.loads(raw)["stopping"])


async def _exists(redis: Redis, key: str) -> bool:
    return bool(await redis.exists(key))


async def _idle(entry: StreamEntry) -> None:
    return None


class TestJobs:
    """Periodic jobs (pipeline/jobs.py) run by the worker beside its stages."""

    async def test_a_job_runs_on_its_interval_and_is_shown_in_the_health_key(
        self, redis: Redis
    ) -> None:
        starts: list[float] = []

        async def tick() -> None:
            starts.append(time.monotonic())

        job = Job("tick", tick, every_s=0.1, timeout_s=1)
        worker = make_worker(redis, _idle, jobs=[job], health_ttl_s=1, consumer="jobs-1")
        async with running(worker):
            await wait_until(lambda: len(starts) >= 4, what="4 runs")
            await asyncio.sleep(0.4)  # the health loop writes every TTL/3
            health = orjson.loads(text(await redis.get(f"{KEY_WORKER_HEALTH}jobs-1")))
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.09  # counted from start to start, not run back to back
        assert max(gaps[:3]) < 0.5
        state = health["jobs"]["tick"]
        assert state["runs"] >= 4
        assert state["failures"] == 0
        assert state["last_outcome"] == "ok"
        assert state["last_error"] is None
        assert state["last_started_at"].endswith("Z")
        assert state["last_ended_at"] >= state["last_started_at"]
        assert state["last_success_at"] == state["last_ended_at"]
        assert worker.jobs["tick"]["runs"] == len(starts)

    async def test_runs_of_one_job_never_overlap(self, redis: Redis) -> None:
        active = 0
        most = 0
        runs = 0

        async def slow() -> None:
            nonlocal active, most, runs
            active += 1
            most = max(most, active)
            try:
                await asyncio.sleep(0.15)  # longer than the interval
            finally:
                active -= 1
                runs += 1

        worker = make_worker(redis, _idle, jobs=[Job("slow", slow, every_s=0.02, timeout_s=1)])
        async with running(worker):
            await wait_until(lambda: runs >= 3, what="3 runs")
        assert most == 1

    async def test_a_failing_job_is_counted_and_the_worker_keeps_going(
        self, redis: Redis, log_records: list[dict[str, Any]]
    ) -> None:
        calls = 0
        handled: list[str] = []

        async def broken() -> None:
            nonlocal calls
            calls += 1
            if calls % 2:
                raise RuntimeError("sweep exploded")

        async def handler(entry: StreamEntry) -> None:
            handled.append(entry.entry_id)

        worker = make_worker(
            redis, handler, jobs=[Job("broken", broken, every_s=0.05, timeout_s=1)]
        )
        async with running(worker) as task:
            await wait_until(lambda: calls >= 4, what="4 runs")
            await add(redis, 3)
            await wait_until(lambda: len(handled) == 3, what="entries handled")
            assert not task.done()
            state = worker.jobs["broken"]
            assert state["failures"] >= 2
            assert state["runs"] >= 4
            assert state["last_success_at"] is not None
        failed = [r for r in log_records if r["msg"] == "job run failed"]
        assert failed and failed[0]["job"] == "broken" and failed[0]["level"] == "ERROR"

    async def test_a_hung_run_is_cut_at_its_timeout_and_the_job_runs_again(
        self, redis: Redis
    ) -> None:
        started = 0

        async def hangs() -> None:
            nonlocal started
            started += 1
            await asyncio.sleep(3600)

        worker = make_worker(redis, _idle, jobs=[Job("hangs", hangs, every_s=0.05, timeout_s=0.1)])
        async with running(worker):
            await wait_until(lambda: worker.jobs["hangs"]["timeouts"] >= 2, what="2 timeouts")
            state = worker.jobs["hangs"]
            assert state["last_outcome"] == "timeout"
            assert state["last_error"] == "run timed out after 0.1 s"
        assert started >= 2

    async def test_a_job_given_the_stop_event_ends_its_run_at_stop(self, redis: Redis) -> None:
        ended: list[str] = []

        async def sweep(stop: asyncio.Event) -> None:
            await stop.wait()
            ended.append("cleanly")

        worker = make_worker(redis, _idle, jobs=[Job("sweep", sweep, every_s=60, timeout_s=60)])
        task = asyncio.create_task(worker.run())
        await wait_until(lambda: worker.jobs["sweep"]["running"], what="run started")
        began = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - began < 1.0
        assert ended == ["cleanly"]
        assert worker.jobs["sweep"]["last_outcome"] == "ok"

    async def test_stop_gives_a_run_the_grace_then_cancels_it(self, redis: Redis) -> None:
        finished: list[str] = []

        async def slow() -> None:
            try:
                await asyncio.sleep(0.3)
                finished.append("within grace")
            except asyncio.CancelledError:
                finished.append("cancelled")
                raise

        async def stuck() -> None:
            await asyncio.sleep(3600)

        worker = make_worker(
            redis,
            _idle,
            shutdown_grace_s=1.0,
            jobs=[
                Job("slow", slow, every_s=60, timeout_s=60),
                Job("stuck", stuck, every_s=60, timeout_s=60),
            ],
        )
        task = asyncio.create_task(worker.run())
        await wait_until(lambda: worker.jobs["stuck"]["running"], what="runs started")
        began = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 5)
        elapsed = time.monotonic() - began
        assert finished == ["within grace"]  # the short run finished inside the grace
        assert 0.9 <= elapsed < 2.0  # the stuck one was given the grace, then cancelled
        assert worker.jobs["stuck"]["last_outcome"] == "cancelled"
        assert worker.jobs["slow"]["runs"] == 1  # no new run after stop

    async def test_a_run_that_swallows_cancels_is_abandoned_within_the_bound(
        self, redis: Redis
    ) -> None:
        swallowed = 0
        release = False
        runs: list[asyncio.Task[Any]] = []

        async def stubborn() -> None:
            nonlocal swallowed
            task = asyncio.current_task()
            assert task is not None
            runs.append(task)
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if release:
                        raise
                    swallowed += 1

        worker = make_worker(
            redis,
            _idle,
            shutdown_grace_s=0.2,
            jobs=[Job("stubborn", stubborn, every_s=60, timeout_s=60)],
        )
        task = asyncio.create_task(worker.run())
        await wait_until(lambda: worker.jobs["stubborn"]["running"], what="run started")
        began = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 15)
        assert time.monotonic() - began < 0.2 + 5.0 + 1.0  # grace + cancel bound + slack
        assert swallowed >= 2  # cancelled again and again, then left behind
        release = True
        runs[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runs[0]

    def test_job_settings_are_checked(self) -> None:
        async def nothing() -> None:
            return None

        async def two(a: int, b: int) -> None:
            return None

        with pytest.raises(ValueError, match="every_s"):
            Job("x", nothing, every_s=0, timeout_s=1)
        with pytest.raises(ValueError, match="timeout_s"):
            Job("x", nothing, every_s=1, timeout_s=0)
        with pytest.raises(ValueError, match="no argument or the stop event"):
            Job("x", two, every_s=1, timeout_s=1)
