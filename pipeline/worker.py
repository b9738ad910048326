"""The one consumer loop every pipeline stage runs on (Redis Streams consumer groups).

Delivery is at least once (../shared/design.md, Events): an entry is acked only
after its handler returned, so a crash, a timeout or a lost connection leaves
it pending, and `XAUTOCLAIM` hands it to a live consumer once it has been idle
for `claim_idle_ms`. An entry that keeps failing goes to `stream:dead_letter`
with its last error after `max_deliveries`, instead of looping forever.

The shape follows arq's Worker (../shared/conventions.md): explicit settings,
work started under one semaphore and reaped so errors surface, signal handlers
that stop intake and drain, a health key with a TTL, and one log line per
outcome (done / retry / fail / dead letter). Periodic work (settlement sweeps, the
metrics sampler) runs as the worker's `Job`s (pipeline/jobs.py, arq's cron jobs):
drained with the handlers at stop, shown in the health key and the metrics.

Timing rules worth knowing:

* `block_ms` must stay well below the client's `socket_timeout`
  (`REDIS_SOCKET_TIMEOUT_S`, 10 s by default in shared/redis.py): a blocking
  `XREADGROUP` that outlives the socket timeout is seen by redis-py as a dead
  connection, retried, and finally raised. The constructor refuses a `block_ms`
  above half the socket timeout.
* A handler may run longer than `claim_idle_ms` (the default timeout is 300 s,
  the default claim idle 60 s): while it runs, the worker keeps resetting the
  entry's idle time (`XCLAIM ... JUSTID`, which leaves the delivery count
  alone), so no other consumer reclaims work that is still in progress. Only
  the entries of a consumer that stopped heart-beating (killed, frozen,
  partitioned) become claimable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from pipeline.jobs import Job, Jobs
from pipeline.metrics import WORKER_REDIS_ERRORS, StageMetrics
from shared.backoff import Backoff, Waits
from shared.constants import EVENT_VERSION, KEY_WORKER_HEALTH, STREAM_DEAD_LETTER
from shared.events import decode_fields, text
from shared.ids import iso, new_id, utcnow
from shared.logging import mask
from shared.outage import outage_reason
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from loguru import Logger

__all__ = [
    "Drop",
    "Handler",
    "Job",
    "Retry",
    "Stage",
    "StreamEntry",
    "Worker",
    "default_consumer",
]

# Fields of the original entry copied onto its dead-letter entry, so that
# `XRANGE stream:dead_letter` can be filtered by trade without parsing `original`.
_COPIED_FIELDS: Final = ("trade_id", "netuid", "hotkey", "source")
_STAT_NAMES: Final = ("done", "retried", "dead_lettered", "reclaimed", "failed", "outage_waits")
# Last errors are kept per entry until it is acked or dead-lettered; entries that
# another consumer finishes would otherwise accumulate, so the map is bounded.
_LAST_ERRORS_MAX: Final = 10_000
# A read or reclaim loop that keeps hitting Redis errors waits this long, doubling to the cap.
_REDIS_BACKOFF: Final = Backoff(first_s=0.1, cap_s=5.0)
# A handler whose dependency is down is retried in place: first after this, doubling to the cap.
_OUTAGE_FIRST_S: Final = 0.5
_OUTAGE_CAP_S: Final = 15.0
# After stop(), how long past one BLOCK period a reader may take to return
# before it is cancelled (a cancelled read may leave entries pending, to be reclaimed).
_INTAKE_STOP_SLACK_S: Final = 2.0
_CANCEL_BOUND_S: Final = 5.0  # a task that ignores cancels this long is abandoned
_UNBLOCK_POLL_S: Final = 0.05
_MIN_KEEPALIVE_S: Final = 0.01

# Resets the idle time of entries this consumer still owns. The ownership check
# (XPENDING filtered by consumer) and the XCLAIM are one atomic step, so an
# entry that another consumer has already reclaimed is never taken back.
# ARGV: group, consumer, idle ms to set, ids...
_TOUCH_LUA: Final = """
local touched = 0
for i = 4, #ARGV do
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #owned > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    touched = touched + 1
  end
end
return touched
"""


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry as a handler sees it, fields decoded to `str`."""

    stream: str
    group: str
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # 1 on first delivery (XPENDING times_delivered on redelivery)
    # Why the entry can never be handled (its bytes do not decode); it is dead-lettered
    # without reaching the handler.
    poison: str | None = None


class Retry(Exception):
    """Raise from a handler to ask for redelivery (entry stays pending, not acked).

    `defer_s` is a hint: when > 0 the entry becomes claimable after about
    `defer_s` (plus up to `claim_every_s`) instead of after `claim_idle_ms`;
    it cannot be deferred longer than `claim_idle_ms`. 0 means "no preference".
    """

    def __init__(self, reason: str, *, defer_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer_s = defer_s


class Unavailable(Exception):
    """Raise when a dependency (database, chain, outside API) is down. The entry is retried
    in place with backoff while this consumer keeps it, spending no delivery; the errors
    `shared.outage` recognises (connection refused, DB/Redis/chain unavailable, retryable
    outside-API errors) are treated the same without being wrapped."""


class _HandlerTimedOut(Exception):
    """Internal: one try of a handler ran past WORKER_HANDLER_TIMEOUT_S."""


class Drop(Exception):
    """Raise to send the entry straight to the dead-letter stream (permanent failure) and ack it."""


Handler = Callable[[StreamEntry], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Stage:
    """A handler bound to one consumer group of one stream."""

    name: str
    stream: str
    group: str
    handler: Handler


@dataclass(slots=True)
class _InFlight:
    stage: Stage
    entry_id: str
    last_touch: float  # monotonic; when its idle time was last reset in Redis


def _stream_entries(response: Any) -> list[Any]:
    """The (id, fields) pairs of a one-stream XREADGROUP reply, whatever its parsed shape.

    RESP2 legacy gives `[[stream, entries]]`; RESP3 and redis-py's unified
    shapes give `{stream: entries}` or `{stream: [entries]}`.
    """
    if not response:
        return []
    if isinstance(response, dict):
        value = next(iter(response.values()))
        if value and isinstance(value[0], list):
            value = value[0]
        return list(value or [])
    return list(response[0][1] or [])


def _group_missing(exc: ResponseError) -> bool:
    """NOGROUP: stream or group deleted; UNBLOCKED: deleted while we were blocked on it."""
    text = str(exc)
    return text.startswith("NOGROUP") or text.startswith("UNBLOCKED")


def default_consumer() -> str:
    """A consumer name unique per process, readable in `XINFO CONSUMERS`."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Consumes one or more stages' streams with bounded concurrency; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        stages: Sequence[Stage],
        *,
        consumer: str | None = None,
        concurrency: int = 32,
        batch: int = 32,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        claim_every_s: float = 5.0,
        max_deliveries: int = 5,
        handler_timeout_s: float = 300.0,
        health_ttl_s: int = 30,
        dead_letter_maxlen: int = 100_000,
        shutdown_grace_s: float = 30.0,
        outage_backoff_s: tuple[float, float] = (_OUTAGE_FIRST_S, _OUTAGE_CAP_S),
        jobs: Sequence[Job] = (),
    ) -> None:
        if not stages:
            raise ValueError("a worker needs at least one stage")
        keys = [(s.stream, s.group) for s in stages]
        if len(set(keys)) != len(keys):
            raise ValueError("two stages share one stream and group")
        for name, value in (
            ("concurrency", concurrency),
            ("batch", batch),
            ("block_ms", block_ms),
            ("claim_idle_ms", claim_idle_ms),
            ("max_deliveries", max_deliveries),
            ("health_ttl_s", health_ttl_s),
            ("dead_letter_maxlen", dead_letter_maxlen),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, seconds in (
            ("claim_every_s", claim_every_s),
            ("handler_timeout_s", handler_timeout_s),
        ):
            if seconds <= 0:
                raise ValueError(f"{name} must be > 0, got {seconds}")
        if shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s must be >= 0, got {shutdown_grace_s}")
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        if socket_timeout is not None and block_ms / 1000 > float(socket_timeout) / 2:
            # A BLOCK that outlives the socket timeout turns every idle read into a
            # TimeoutError (and a reconnect); half leaves room for latency and load.
            raise ValueError(
                f"block_ms={block_ms} must be at most half the client's socket_timeout "
                f"({socket_timeout} s)"
            )

        self._redis = redis
        self._stages = tuple(stages)
        self.consumer = consumer or default_consumer()
        self._concurrency = concurrency
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._claim_every_s = claim_every_s
        self._max_deliveries = max_deliveries
        self._handler_timeout_s = handler_timeout_s
        self._health_ttl_s = health_ttl_s
        self._dead_letter_maxlen = dead_letter_maxlen
        self._shutdown_grace_s = shutdown_grace_s
        self._outage_backoff = Backoff(*outage_backoff_s)  # (first, cap) while a dependency is down

        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        # Prometheus series per stage, bound once (pipeline/metrics.py).
        self._metrics = {s.name: StageMetrics(s.name) for s in self._stages}
        self._jobs = Jobs(tuple(jobs), cancel_bound_s=_CANCEL_BOUND_S)
        self._sem = asyncio.Semaphore(concurrency)
        self._stop_event = asyncio.Event()
        self._force_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handling: set[tuple[str, str, str]] = set()  # (stream, group, id) with a task
        self._inflight: dict[tuple[str, str, str], _InFlight] = {}  # handler still running
        self._last_errors: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._blocking_ids: dict[str, int] = {}  # stage name -> CLIENT ID of its blocked read
        self._signals: list[signal.Signals] = []
        self._touch = redis.register_script(_TOUCH_LUA)
        self._health_key = f"{KEY_WORKER_HEALTH}{self.consumer}"
        self._started_at = ""
        self._running = False
        self._log = logger.bind(consumer=self.consumer)
        self._jobs.bind_log(self._log)

    # ----------------------------------------------------------------- public API

    @property
    def in_flight(self) -> int:
        """Handlers running right now."""
        return len(self._tasks)

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Each periodic job's state, as the health key shows it."""
        return self._jobs.state()

    def stop(self) -> None:
        """Stop taking entries and let run() drain; a second call stops waiting for the drain."""
        if self._stop_event.is_set():
            if not self._force_event.is_set():
                self._log.warning("second stop: abandoning in-flight entries (they stay pending)")
            self._force_event.set()
            return
        self._log.info("stopping: no new entries, draining in-flight ones")
        self._stop_event.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT → stop() (a second signal abandons the drain); run() removes them."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._signals.append(sig)

    async def run(self) -> None:
        """Consume until stop(); then drain in-flight handlers for up to `shutdown_grace_s`.

        A Worker runs once: after it returned, build a new one (stop() is sticky).
        Redis being unreachable, at start or later, is logged and retried, not raised.
        """
        if self._running:
            raise RuntimeError("Worker.run() is already running")
        self._running = True
        self._started_at = iso(utcnow())
        readers = [
            asyncio.create_task(self._read_loop(stage), name=f"worker-read:{stage.name}")
            for stage in self._stages
        ]
        reclaimer = asyncio.create_task(self._reclaim_loop(), name="worker-reclaim")
        keepalive = asyncio.create_task(self._keepalive_loop(), name="worker-keepalive")
        health = asyncio.create_task(self._health_loop(), name="worker-health")
        jobs = self._jobs.start(self._stop_event)
        loops = [*readers, reclaimer, keepalive, health, *jobs]
        self._log.info(
            "worker started",
            stages=[s.name for s in self._stages],
            concurrency=self._concurrency,
            jobs=list(self.jobs),
        )
        crashed: BaseException | None = None
        stop_wait = asyncio.create_task(self._stop_event.wait())
        try:
            done, _ = await asyncio.wait([stop_wait, *loops], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is stop_wait:
                    continue
                exc = None if task.cancelled() else task.exception()
                if exc is None and self._stop_event.is_set():
                    continue  # a reader that saw stop() before this wait did
                # The loops catch every Exception; reaching here is a bug worth stopping for.
                self._log.opt(exception=exc).critical(
                    "worker loop ended unexpectedly", loop=task.get_name()
                )
                crashed = crashed or exc or RuntimeError(f"{task.get_name()} ended")
                self._stop_event.set()
            await self._stop_intake([*readers, reclaimer])
            # Tell monitors (and tests) at once that this consumer takes nothing more.
            await self._write_health()
            # Handlers and job runs drain side by side, within the same grace.
            await asyncio.gather(
                self._drain(), self._jobs.drain(self._shutdown_grace_s, self._force_event)
            )
        except asyncio.CancelledError:
            # Cancelled from outside: no drain, in-flight entries stay pending for reclaim.
            self._stop_event.set()
            self._force_event.set()
            await self._cancel_all([*readers, reclaimer, *self._tasks])
            await self._jobs.cancel()
            raise
        finally:
            stop_wait.cancel()
            await self._cancel_all([keepalive, health])
            await self._delete_health()
            self._remove_signal_handlers()
            self._running = False
            self._log.info("worker stopped", **self.stats)
        if crashed is not None:
            raise crashed

    # ------------------------------------------------------------------ intake

    async def _read_loop(self, stage: Stage) -> None:
        """XREADGROUP for one stage, never reading more entries than it can start.

        Slots are taken before the read. Under load the read does not block and
        asks for as many entries as there are free slots (up to `batch`); once the
        stream is drained the reader blocks holding a single slot, so an idle
        stage does not sit on capacity another stage could use.
        """
        client = self._redis.client()  # one connection of our own, so stop() can unblock it
        backoff = _REDIS_BACKOFF.waits()
        group_ready = False
        idle = False
        log = self._log.bind(stage=stage.name, stream=stage.stream)
        try:
            while not self._stop_event.is_set():
                reserved = await self._reserve(1 if idle else self._batch)
                if reserved == 0:
                    break
                started = 0
                error: BaseException | None = None
                try:
                    if self._stop_event.is_set():
                        break
                    if not group_ready:
                        await self._ensure_group(stage)
                        group_ready = True
                    if idle:
                        self._blocking_ids[stage.name] = int(await client.client_id())
                    response = await client.xreadgroup(
                        stage.group,
                        self.consumer,
                        {stage.stream: ">"},
                        count=reserved,
                        block=self._block_ms if idle else None,
                    )
                    self._blocking_ids.pop(stage.name, None)
                    pairs = _stream_entries(response)
                    for raw_id, raw_fields in pairs:
                        fields, poison = _decode_entry(raw_fields)
                        entry = StreamEntry(
                            stage.stream, stage.group, text(raw_id), fields, 1, poison
                        )
                        self._start(stage, entry, "read")
                        started += 1
                    idle = not pairs
                    backoff.reset()
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
                    self._blocking_ids.pop(stage.name, None)
                    self._release(reserved - started)
                if error is not None:  # slots released first: a backoff holds no capacity
                    await self._pause(log, "read failed", error, backoff)
        finally:
            await client.aclose()

    async def _reclaim_loop(self) -> None:
        """Every `claim_every_s`, take over entries idle for `claim_idle_ms` in every stage."""
        backoff = _REDIS_BACKOFF.waits()
        while not self._stop_event.is_set():
            for stage in self._stages:
                if self._stop_event.is_set():
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
        while not self._stop_event.is_set():
            reserved = await self._reserve(self._batch)
            if reserved == 0:
                return
            started = 0
            try:
                reply = await self._redis.xautoclaim(
                    stage.stream,
                    stage.group,
                    self.consumer,
                    self._claim_idle_ms,
                    start_id=cursor,
                    count=reserved,
                )
                cursor = text(reply[0])
                claimed: list[tuple[str, dict[str, str], str | None]] = []
                gone: list[str] = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
                for raw_id, raw_fields in reply[1] or []:
                    if raw_id is None:
                        continue
                    if raw_fields is None:
                        gone.append(text(raw_id))  # deleted entry (Redis 6.2 reply shape)
                        continue
                    key = (stage.stream, stage.group, text(raw_id))
                    if key in self._handling:
                        continue  # still running here; keepalive lapsed (event loop stalled?)
                    claimed.append((text(raw_id), *_decode_entry(raw_fields)))
                if gone:
                    # Redis 7 has already dropped them from the PEL; XACK covers older servers.
                    await self._redis.xack(stage.stream, stage.group, *gone)
                    log.info("pending entries were deleted from the stream", entry_ids=gone)
                deliveries = await self._delivery_counts(stage, [c[0] for c in claimed])
                for entry_id, fields, poison in claimed:
                    count = deliveries.get(entry_id)
                    if count is None:
                        continue  # acked by someone else between the two commands
                    self._start(
                        stage,
                        StreamEntry(stage.stream, stage.group, entry_id, fields, count, poison),
                        "reclaim",
                    )
                    started += 1
                if started:
                    self.stats["reclaimed"] += started
                    log.info("reclaimed pending entries", count=started)
            finally:
                self._release(reserved - started)
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

    # --------------------------------------------------------------- handling

    def _start(self, stage: Stage, entry: StreamEntry, via: str) -> None:
        """Run one entry; the slot reserved for it is released when its task is reaped."""
        key = (stage.stream, stage.group, entry.entry_id)
        self._handling.add(key)
        self._inflight[key] = _InFlight(stage, entry.entry_id, time.monotonic())
        metrics = self._metrics[stage.name]
        metrics.deliveries[via].inc()
        metrics.in_flight.inc()
        task = asyncio.create_task(
            self._process(stage, entry), name=f"worker:{stage.name}:{entry.entry_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._reap(key, t, metrics))

    def _reap(
        self, key: tuple[str, str, str], task: asyncio.Task[None], metrics: StageMetrics
    ) -> None:
        self._tasks.discard(task)
        self._handling.discard(key)
        self._inflight.pop(key, None)
        self._sem.release()
        metrics.in_flight.dec()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.opt(exception=exc).error("entry task crashed", entry_id=key[2])

    async def _process(self, stage: Stage, entry: StreamEntry) -> None:
        key = (stage.stream, stage.group, entry.entry_id)
        context: dict[str, Any] = {
            "stage": stage.name,
            "stream": stage.stream,
            "entry_id": entry.entry_id,
            "deliveries": entry.deliveries,
        }
        if "trade_id" in entry.fields:
            context["trade_id"] = entry.fields["trade_id"]
        log = self._log.bind(**context)

        metrics = self._metrics[stage.name]
        if entry.poison is not None:
            log.warning("entry can never be handled", reason=entry.poison)
            await self._dead_letter(stage, entry, entry.poison, log, "poison")
            return

        if entry.deliveries > self._max_deliveries:
            error = self._last_errors.pop(key, None) or "exceeded MAX_DELIVERIES"
            await self._dead_letter(stage, entry, error, log, "max_deliveries")
            return

        began = time.monotonic()
        try:
            try:
                await self._handle_through_outages(stage, entry, log)
            finally:
                # No more keepalive touches from here: one racing a retry's defer
                # would undo it.
                self._inflight.pop(key, None)
        except Retry as exc:
            self.stats["retried"] += 1
            metrics.finished("retry", began)
            self._remember_error(key, f"Retry: {exc.reason}")
            log.warning("entry retry", reason=mask(exc.reason), defer_s=exc.defer_s)
            if exc.defer_s > 0:
                await self._defer(stage, entry.entry_id, exc.defer_s, log)
        except Drop as exc:
            metrics.latency.observe(time.monotonic() - began)
            log.warning("entry dropped by handler", reason=mask(str(exc)))
            await self._dead_letter(stage, entry, f"Drop: {exc}", log, "dropped")
        except _HandlerTimedOut:
            self.stats["failed"] += 1
            metrics.finished("timeout", began)
            error = f"handler timed out after {self._handler_timeout_s:g} s"
            log.error("entry failed", error=error)
            self._remember_error(key, error)
        except asyncio.CancelledError:
            log.warning("entry abandoned at shutdown; it stays pending for another consumer")
            raise
        except Exception as exc:
            self.stats["failed"] += 1
            metrics.finished("failed", began)
            error = f"{type(exc).__name__}: {exc}"
            self._remember_error(key, error)
            log.opt(exception=exc).error("entry failed", error=mask(error))
        else:
            try:
                acked = await self._redis.xack(stage.stream, stage.group, entry.entry_id)
            except (RedisError, OSError) as exc:
                self.stats["failed"] += 1
                WORKER_REDIS_ERRORS.labels("ack").inc()
                metrics.finished("failed", began)
                self._remember_error(key, f"ack failed: {exc}")
                log.error("entry done but ack failed; it will be redelivered", error=str(exc))
                return
            self.stats["done"] += 1
            metrics.finished("done", began)
            self._last_errors.pop(key, None)
            elapsed_ms = round((time.monotonic() - began) * 1000, 1)
            if acked:
                log.info("entry done", ms=elapsed_ms)
            else:
                log.warning(
                    "entry done but no longer pending (reclaimed meanwhile?)", ms=elapsed_ms
                )

    async def _handle_through_outages(self, stage: Stage, entry: StreamEntry, log: Logger) -> None:
        """Run the handler; while a dependency is down, wait and run it again in place.

        The entry stays in flight (the keepalive keeps it ours), so an outage costs no
        delivery however long it lasts. Each try gets the full handler timeout. At stop the
        last error is raised: the entry stays pending for whoever runs next.
        """
        backoff = self._outage_backoff.waits()
        while True:
            timeout = asyncio.timeout(self._handler_timeout_s)
            try:
                # Every line the handler logs, however deep (stages, clients, the SDK through
                # the stdlib intercept), and its tasks', carries the entry's trade and stage.
                with logger.contextualize(**_entry_context(stage, entry)):
                    async with timeout:
                        await stage.handler(entry)
                return
            except (Retry, Drop):
                raise
            except Exception as exc:
                if timeout.expired():
                    raise _HandlerTimedOut from exc
                reason = str(exc) if isinstance(exc, Unavailable) else outage_reason(exc)
                if reason is None or self._stop_event.is_set():
                    raise
                self.stats["outage_waits"] += 1
                self._metrics[stage.name].outage_waits.inc()
                delay = backoff.next()
                log.warning(
                    "dependency unavailable; retrying in place (no delivery spent)",
                    reason=mask(reason),
                    retry_in_s=round(delay, 2),
                )
                if await self._sleep(delay):
                    raise

    def _remember_error(self, key: tuple[str, str, str], error: str) -> None:
        self._last_errors[key] = mask(error)
        self._last_errors.move_to_end(key)
        while len(self._last_errors) > _LAST_ERRORS_MAX:
            self._last_errors.popitem(last=False)

    async def _defer(self, stage: Stage, entry_id: str, defer_s: float, log: Logger) -> None:
        """Make a retried entry claimable after ~defer_s by back-dating its idle time.

        Only while this consumer still owns it (the touch script checks), so a
        retry never takes an entry back from a consumer that already reclaimed it.
        """
        idle_ms = max(0, self._claim_idle_ms - int(defer_s * 1000))
        try:
            await self._touch(
                keys=[stage.stream], args=[stage.group, self.consumer, idle_ms, entry_id]
            )
        except (RedisError, OSError) as exc:
            log.warning(
                "could not apply retry defer; default reclaim delay applies", error=str(exc)
            )

    async def _dead_letter(
        self, stage: Stage, entry: StreamEntry, error: str, log: Logger, why: str
    ) -> None:
        """XADD to the dead-letter stream and XACK the original, atomically (MULTI/EXEC).

        `why` labels the metric: max_deliveries | dropped | poison."""
        key = (stage.stream, stage.group, entry.entry_id)
        fields: dict[str, str] = {
            "type": "dead_letter",
            "version": str(EVENT_VERSION),
            "event_id": new_id(),
            "occurred_at": iso(utcnow()),
        }
        for name in _COPIED_FIELDS:
            if name in entry.fields:
                fields[name] = entry.fields[name]
        fields.update(
            stream=stage.stream,
            group=stage.group,
            entry_id=entry.entry_id,
            deliveries=str(entry.deliveries),
            error=mask(error),
            original=orjson.dumps(entry.fields).decode(),
        )
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    STREAM_DEAD_LETTER,
                    fields,  # type: ignore[arg-type]
                    maxlen=self._dead_letter_maxlen,
                    approximate=True,
                )
                pipe.xack(stage.stream, stage.group, entry.entry_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.stats["failed"] += 1
            WORKER_REDIS_ERRORS.labels("dead_letter").inc()
            log.error("dead-lettering failed; entry stays pending", error=str(exc))
            return
        self.stats["dead_lettered"] += 1
        metrics = self._metrics[stage.name]
        metrics.outcomes["dead_lettered"].inc()
        metrics.dead_letters[why].inc()
        self._last_errors.pop(key, None)
        log.error("entry dead-lettered", error=fields["error"])

    # --------------------------------------------------------- housekeeping

    async def _keepalive_loop(self) -> None:
        """Reset the idle time of running entries so no other consumer reclaims them."""
        period = max(_MIN_KEEPALIVE_S, self._claim_idle_ms / 3000)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            due: dict[Stage, list[_InFlight]] = {}
            for item in list(self._inflight.values()):
                if now - item.last_touch >= period:
                    due.setdefault(item.stage, []).append(item)
            for stage, items in due.items():
                try:
                    await self._touch(
                        keys=[stage.stream],
                        args=[stage.group, self.consumer, 0, *(i.entry_id for i in items)],
                    )
                except (RedisError, OSError) as exc:
                    self._log.warning("keepalive failed", stage=stage.name, error=str(exc))
                    continue
                for item in items:
                    item.last_touch = now

    async def _health_loop(self) -> None:
        """Refresh the health key every TTL/3, so a dead worker's key expires by itself."""
        period = max(0.1, self._health_ttl_s / 3)
        while True:
            await self._write_health()
            await asyncio.sleep(period)

    async def _write_health(self) -> None:
        """SET health:worker:{consumer} <json> EX health_ttl_s."""
        payload = {
            "consumer": self.consumer,
            "stages": [s.name for s in self._stages],
            "pid": os.getpid(),
            "started_at": self._started_at,
            "updated_at": iso(utcnow()),
            "in_flight": len(self._tasks),
            "stopping": self._stop_event.is_set(),
            "stats": self.stats,
            "jobs": self._jobs.state(),
        }
        try:
            await self._redis.set(self._health_key, orjson.dumps(payload), ex=self._health_ttl_s)
        except (RedisError, OSError) as exc:
            self._log.warning("health update failed", error=str(exc))

    async def _delete_health(self) -> None:
        try:
            await self._redis.delete(self._health_key)
        except (RedisError, OSError) as exc:
            self._log.warning("could not delete health key; it expires by TTL", error=str(exc))

    # ------------------------------------------------------------- shutdown

    async def _stop_intake(self, intake: list[asyncio.Task[None]]) -> None:
        """Wait for readers and the reclaimer to return, unblocking blocked reads.

        CLIENT UNBLOCK ends a blocked XREADGROUP as if its BLOCK had timed out, so
        nothing is delivered to a consumer that is going away. Cancelling the read
        instead could lose the reply to a read the server already served (those
        entries would wait `claim_idle_ms` for a reclaim); that is the fallback only.
        """
        limit = time.monotonic() + self._block_ms / 1000 + _INTAKE_STOP_SLACK_S
        waiting = [t for t in intake if not t.done()]
        while waiting and time.monotonic() < limit:
            for stage_name, client_id in list(self._blocking_ids.items()):
                try:
                    await self._redis.client_unblock(client_id)
                except (RedisError, OSError) as exc:
                    self._log.debug("client unblock failed", stage=stage_name, error=str(exc))
            await asyncio.wait(waiting, timeout=_UNBLOCK_POLL_S)
            waiting = [t for t in waiting if not t.done()]
        if waiting:
            self._log.warning("intake did not stop in time; cancelling", tasks=len(waiting))
        await self._cancel_all(intake)

    async def _drain(self) -> None:
        """Wait for in-flight handlers up to the grace time; the rest stay pending."""
        deadline = time.monotonic() + self._shutdown_grace_s
        if self._tasks:
            self._log.info("draining in-flight entries", in_flight=len(self._tasks))
        force = asyncio.create_task(self._force_event.wait())
        try:
            while self._tasks and not self._force_event.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait(
                    [*self._tasks, force], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            force.cancel()
        if self._tasks:
            self._log.warning(
                "grace time over; abandoning in-flight entries (they stay pending)",
                in_flight=len(self._tasks),
            )
            await self._cancel_all(list(self._tasks))

    @staticmethod
    async def _cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
        # Bounded: a cancel lost inside redis-py's wait_for must not hang the shutdown.
        await cancel_and_wait(tasks, timeout_s=_CANCEL_BOUND_S)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._log.info("signal received", signal=sig.name)
        self.stop()

    def _remove_signal_handlers(self) -> None:
        if not self._signals:
            return
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    # ---------------------------------------------------------------- slots

    async def _reserve(self, want: int) -> int:
        """Take between 1 and `want` concurrency slots, waiting for the first; 0 once stopping."""
        if not await self._acquire_one():
            return 0
        got = 1
        while got < want and not self._sem.locked():
            await self._sem.acquire()  # returns at once: the semaphore is not locked
            got += 1
        return got

    async def _acquire_one(self) -> bool:
        if self._stop_event.is_set():
            return False
        if not self._sem.locked():
            await self._sem.acquire()
            return True
        acquire = asyncio.ensure_future(self._sem.acquire())
        stopped = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait([acquire, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not acquire.done():
                acquire.cancel()
                await asyncio.wait([acquire])
        got = not acquire.cancelled() and acquire.exception() is None
        if got and self._stop_event.is_set():
            self._sem.release()
            return False
        return got

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._sem.release()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stop() is called first; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)
        return self._stop_event.is_set()

    async def _pause(self, log: Logger, what: str, exc: BaseException, backoff: Waits) -> None:
        delay = backoff.next()
        log.warning(f"{what}; retrying", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
        await self._sleep(delay)


def _entry_context(stage: Stage, entry: StreamEntry) -> dict[str, str]:
    context = {"stage": stage.name}
    if "trade_id" in entry.fields:
        context["trade_id"] = entry.fields["trade_id"]
    return context


def _decode_entry(raw: Mapping[Any, Any]) -> tuple[dict[str, str], str | None]:
    """An entry's fields as str, or (a readable copy, why it is poison) when its bytes are not
    UTF-8: one such entry must not fail the whole read and wedge the entries beside it."""
    try:
        return decode_fields(raw), None
    except UnicodeDecodeError:
        readable: dict[str, str] = {}
        bad: list[str] = []
        for key, value in raw.items():
            name = _lenient(key)
            readable[name] = _lenient(value)
            if any(isinstance(raw, bytes) and not _is_utf8(raw) for raw in (key, value)):
                bad.append(name)
        return readable, f"Drop: fields are not valid UTF-8: {', '.join(bad) or 'unknown'}"


def _lenient(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True
