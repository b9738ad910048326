"""The worker's intake: what it reads (XREADGROUP, one reader a stage) and what it takes over
(XAUTOCLAIM of entries idle for `claim_idle_ms`), never more entries than it has free slots,
and how both stop (CLIENT UNBLOCK, so nothing is delivered to a consumer going away)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from pipeline.entries import Stage, StreamEntry, decode_entry, stream_entries
from pipeline.metrics import WORKER_REDIS_ERRORS
from pipeline.ownership import Key
from pipeline.slots import Slots
from shared.backoff import Backoff, Waits
from shared.events import text
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from loguru import Logger

# A read or reclaim loop that keeps hitting Redis errors waits this long, doubling to the cap.
_REDIS_BACKOFF: Final = Backoff(first_s=0.1, cap_s=5.0)
# After stop, how long past one BLOCK period a reader may take to return
# before it is cancelled (a cancelled read may leave entries pending, to be reclaimed).
_INTAKE_STOP_SLACK_S: Final = 2.0
_CANCEL_BOUND_S: Final = 5.0  # a task that ignores cancels this long is abandoned
_UNBLOCK_POLL_S: Final = 0.05

# Starts handling entries of a stage read or reclaimed (via "read" | "reclaim"); returns how
# many it took (their slots are then the handler's).
HandOver = Callable[[Stage, list[StreamEntry], str], int]


class Intake:
    """The readers and the reclaimer of one worker."""

    def __init__(
        self,
        redis: Redis,
        stages: Sequence[Stage],
        *,
        consumer: str,
        slots: Slots,
        stop: asyncio.Event,
        hand_over: HandOver,
        handling: set[Key],
        stats: dict[str, int],
        batch: int,
        block_ms: int,
        claim_idle_ms: int,
        claim_every_s: float,
        log: Logger,
    ) -> None:
        self._redis = redis
        self._stages = tuple(stages)
        self._consumer = consumer
        self._slots = slots
        self._stop = stop
        self._hand_over = hand_over
        self._handling = handling
        self._stats = stats
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._claim_every_s = claim_every_s
        self._log = log
        self._blocking: dict[str, _ReaderConnection] = {}  # stage name -> its blocked reader

    def start(self) -> list[asyncio.Task[None]]:
        """One reader per stage and the reclaimer, as tasks."""
        readers = [
            asyncio.create_task(self.read_loop(stage), name=f"worker-read:{stage.name}")
            for stage in self._stages
        ]
        return [*readers, asyncio.create_task(self.reclaim_loop(), name="worker-reclaim")]

    async def read_loop(self, stage: Stage) -> None:
        """XREADGROUP for one stage, never reading more entries than it can start.

        Slots are taken before the read. Under load the read does not block and
        asks for as many entries as there are free slots (up to `batch`); once the
        stream is drained the reader blocks holding a single slot, so an idle
        stage does not sit on capacity another stage could use.
        """
        reader = _ReaderConnection(self._redis)  # our own, so stop() can unblock it
        client = reader.client
        backoff = _REDIS_BACKOFF.waits()
        group_ready = False
        idle = False
        log = self._log.bind(stage=stage.name, stream=stage.stream)
        try:
            while not self._stop.is_set():
                reserved = await self._slots.reserve(1 if idle else self._batch)
                if reserved == 0:
                    break
                started = 0
                error: BaseException | None = None
                try:
                    if self._stop.is_set():
                        break
                    if not group_ready:
                        await self._ensure_group(stage)
                        group_ready = True
                    if idle:
                        await reader.ask_id()
                        self._blocking[stage.name] = reader
                    response = await client.xreadgroup(
                        stage.group,
                        self._consumer,
                        {stage.stream: ">"},
                        count=reserved,
                        block=self._block_ms if idle else None,
                    )
                    self._blocking.pop(stage.name, None)
                    pairs = stream_entries(response)
                    entries = [_entry(stage, text(i), raw, 1) for i, raw in pairs]
                    started = self._hand_over(stage, entries, "read")
                    idle = not pairs
                    backoff.reset()
                    if started:
                        # The handler's first step (up to its first round trip) runs before
                        # this reader's next read: the entry's hop does not wait behind it.
                        await asyncio.sleep(0)
                except ResponseError as exc:
                    missing = _group_missing(exc)
                    if missing and group_ready:
                        # Stream (or group) deleted under us: recreate it at once; a second
                        # miss in a row goes through the backoff like any other error.
                        log.warning("consumer group missing, recreating it", error=str(exc))
                    else:
                        error = exc
                    group_ready = group_ready and not missing
                    idle = idle and not missing
                except (RedisError, OSError) as exc:
                    WORKER_REDIS_ERRORS.labels("read").inc()
                    error = exc
                except Exception as exc:  # a bug must not kill intake
                    log.opt(exception=exc).error("reader error")
                    error = exc
                finally:
                    self._blocking.pop(stage.name, None)
                    self._slots.release(reserved - started)
                if error is not None:  # slots released first: a backoff holds no capacity
                    await self._pause(log, "read failed", error, backoff)
        finally:
            await reader.aclose()

    async def reclaim_loop(self) -> None:
        """Every `claim_every_s`, take over entries idle for `claim_idle_ms` in every stage."""
        backoff = _REDIS_BACKOFF.waits()
        while not self._stop.is_set():
            for stage in self._stages:
                if self._stop.is_set():
                    return
                log = self._log.bind(stage=stage.name, stream=stage.stream)
                try:
                    await self._reclaim_stage(stage, log)
                    backoff.reset()
                except ResponseError as exc:
                    if _group_missing(exc):
                        # Nothing to reclaim from a stream that is gone; its reader recreates it.
                        log.debug("no group to reclaim from", error=str(exc))
                        continue
                    WORKER_REDIS_ERRORS.labels("reclaim").inc()
                    await self._pause(log, "reclaim failed", exc, backoff)
                except (RedisError, OSError) as exc:
                    WORKER_REDIS_ERRORS.labels("reclaim").inc()
                    await self._pause(log, "reclaim failed", exc, backoff)
                except Exception as exc:  # a bug must not stop reclaiming
                    log.opt(exception=exc).error("reclaim error")
            if await self._sleep(self._claim_every_s):
                return

    async def _reclaim_stage(self, stage: Stage, log: Logger) -> None:
        """Walk the XAUTOCLAIM cursor once over the stage's pending entries list."""
        cursor = "0-0"
        while not self._stop.is_set():
            reserved = await self._slots.reserve(self._batch)
            if reserved == 0:
                return
            started = 0
            try:
                reply = await self._redis.xautoclaim(
                    stage.stream,
                    stage.group,
                    self._consumer,
                    self._claim_idle_ms,
                    start_id=cursor,
                    count=reserved,
                )
                cursor = text(reply[0])
                claimed: list[tuple[str, Any]] = []
                gone: list[str] = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
                for raw_id, raw_fields in reply[1] or []:
                    if raw_id is None:
                        continue
                    if raw_fields is None:
                        gone.append(text(raw_id))  # deleted entry (Redis 6.2 reply shape)
                        continue
                    if (stage.stream, stage.group, text(raw_id)) in self._handling:
                        continue  # still running here; keepalive lapsed (event loop stalled?)
                    claimed.append((text(raw_id), raw_fields))
                if gone:
                    # Redis 7 has already dropped them from the PEL; XACK covers older servers.
                    await self._redis.xack(stage.stream, stage.group, *gone)
                    log.info("pending entries were deleted from the stream", entry_ids=gone)
                deliveries = await self._delivery_counts(stage, [c[0] for c in claimed])
                entries = [
                    _entry(stage, entry_id, raw, deliveries[entry_id])
                    for entry_id, raw in claimed
                    if entry_id in deliveries  # else acked by someone else meanwhile
                ]
                started = self._hand_over(stage, entries, "reclaim")
                if started:
                    self._stats["reclaimed"] += started
                    log.info("reclaimed pending entries", count=started)
            finally:
                self._slots.release(reserved - started)
            if cursor == "0-0":
                return

    async def _delivery_counts(self, stage: Stage, entry_ids: list[str]) -> dict[str, int]:
        """times_delivered per id (XAUTOCLAIM's reply does not carry it), in one round trip."""
        if not entry_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(stage.stream, stage.group, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        counts: dict[str, int] = {}
        for rows in replies:
            for row in rows:
                counts[text(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def _ensure_group(self, stage: Stage) -> None:
        """XGROUP CREATE ... 0 MKSTREAM: id 0, so entries added before the group are read too."""
        try:
            await self._redis.xgroup_create(stage.stream, stage.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def stop(self, intake: list[asyncio.Task[None]]) -> None:
        """Wait for readers and the reclaimer to return, unblocking blocked reads.

        CLIENT UNBLOCK ends a blocked XREADGROUP as if its BLOCK had timed out, so
        nothing is delivered to a consumer that is going away. Cancelling the read
        instead could lose the reply to a read the server already served (those
        entries would wait `claim_idle_ms` for a reclaim); that is the fallback only.
        """
        limit = time.monotonic() + self._block_ms / 1000 + _INTAKE_STOP_SLACK_S
        waiting = [t for t in intake if not t.done()]
        while waiting and time.monotonic() < limit:
            for stage_name, reader in list(self._blocking.items()):
                if reader.id is None:
                    continue  # reconnecting: its id comes with the connection
                try:
                    await self._redis.client_unblock(reader.id)
                except (RedisError, OSError) as exc:
                    self._log.debug("client unblock failed", stage=stage_name, error=str(exc))
            await asyncio.wait(waiting, timeout=_UNBLOCK_POLL_S)
            waiting = [t for t in waiting if not t.done()]
        if waiting:
            self._log.warning("intake did not stop in time; cancelling", tasks=len(waiting))
        await cancel_and_wait(intake, timeout_s=_CANCEL_BOUND_S)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping first; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _pause(self, log: Logger, what: str, exc: BaseException, backoff: Waits) -> None:
        delay = backoff.next()
        log.warning(f"{what}; retrying", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
        await self._sleep(delay)


class _ReaderConnection:
    """A reader's own connection and its CLIENT ID (what `Intake.stop` unblocks), asked once
    per connection, not before every blocking read. A connection that dropped forgets its id
    before the reader blocks again, and a reconnect (redis-py's, inside any command) asks for
    the new one before its first command, from a connect callback."""

    def __init__(self, redis: Redis) -> None:
        self.client = redis.client()
        self.id: int | None = None
        self._connection: Any = None

    async def ask_id(self) -> None:
        """Know the connection's id (one round trip the first time, none after)."""
        if self._connection is None:
            await self.client.initialize()
            self._connection = self.client.connection
            assert self._connection is not None  # a single-connection client holds one
            self._connection.register_connect_callback(self._connected)
        if not self._connection.is_connected:
            self.id = None  # its id may be another client's by now
        if self.id is None:
            self.id = int(await self.client.client_id())

    async def _connected(self, connection: Any) -> None:
        self.id = None
        await connection.send_command("CLIENT", "ID")
        self.id = int(await connection.read_response())

    async def aclose(self) -> None:
        """Give the connection back to the pool without this reader's callback on it."""
        if self._connection is not None:
            self._connection.deregister_connect_callback(self._connected)
        await self.client.aclose()


def _group_missing(exc: ResponseError) -> bool:
    """NOGROUP: stream or group deleted; UNBLOCKED: deleted while we were blocked on it."""
    message = str(exc)
    return message.startswith("NOGROUP") or message.startswith("UNBLOCKED")


def _entry(stage: Stage, entry_id: str, raw: Any, deliveries: int) -> StreamEntry:
    fields, poison = decode_entry(raw)
    return StreamEntry(stage.stream, stage.group, entry_id, fields, deliveries, poison)
