"""The one consumer loop every pipeline stage runs on (Redis Streams consumer groups).

Delivery is at least once (../shared/design.md, Events): an entry is acked only after its
handler reported it done, so a crash, a timeout or a lost connection leaves it pending, and
`XAUTOCLAIM` hands it to a live consumer once it has been idle for `claim_idle_ms`. An entry
that keeps failing goes to `stream:dead_letter` (a `DeadLetter` event) with its last error
after `max_deliveries`, instead of looping forever.

A batch stage gets every entry of one read at once (pipeline/stages/kit.py); a per-entry
stage gets each entry as its own task. The parts, each in its own module:

* pipeline/entries.py: entries, `Stage`, and the outcomes a handler reports (Retry, Drop,
  Unavailable);
* pipeline/intake.py: the readers (XREADGROUP, never more entries than free slots from
  pipeline/slots.py) and the reclaimer (XAUTOCLAIM);
* pipeline/ownership.py: keepalive touches, so an entry whose handler outlives
  `claim_idle_ms` is not reclaimed from under it, and the defer of retried entries;
* pipeline/acks.py: ack (one XACK per batch), retry, dead letters (one MULTI per batch);
* pipeline/heartbeat.py: the health key; pipeline/jobs.py: periodic jobs (settlement
  sweeps, the metrics sampler), drained with the handlers at stop.

The shape follows arq's Worker (../shared/conventions.md): explicit settings, work started
under one semaphore and reaped so errors surface, signal handlers that stop intake and
drain, a health key with a TTL, and one log line per outcome (done / retry / fail / dead
letter). A dependency outage (`Unavailable`, or an error `shared.outage` recognises) is
waited out in place with backoff, spending no delivery. `block_ms` must stay well below the
client's `socket_timeout` (a blocking read that outlives it is seen by redis-py as a dead
connection): the constructor refuses more than half.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

from loguru import logger
from redis.asyncio import Redis

from pipeline.acks import Acks, Dead, HandlerTimedOut
from pipeline.entries import (
    Drop,
    Handler,
    Outcomes,
    Retry,
    Stage,
    StreamEntry,
    Unavailable,
    check_worker_config,
    default_consumer,
)
from pipeline.heartbeat import Heartbeat
from pipeline.intake import Intake
from pipeline.jobs import Job, Jobs
from pipeline.metrics import StageMetrics
from pipeline.ownership import Key, Ownership
from pipeline.slots import Slots
from shared.backoff import Backoff
from shared.ids import iso, utcnow
from shared.logging import mask
from shared.outage import outage_reason
from shared.tasks import cancel_and_wait

__all__ = [
    "Drop",
    "Handler",
    "Job",
    "Retry",
    "Stage",
    "StreamEntry",
    "Unavailable",
    "Worker",
    "default_consumer",
]

_STAT_NAMES: Final = ("done", "retried", "dead_lettered", "reclaimed", "failed", "outage_waits")
# A handler whose dependency is down is retried in place: first after this, doubling to the cap.
_OUTAGE_FIRST_S: Final = 0.5
_OUTAGE_CAP_S: Final = 15.0
_CANCEL_BOUND_S: Final = 5.0  # a task that ignores cancels this long is abandoned


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
        check_worker_config(
            {
                "concurrency": concurrency,
                "batch": batch,
                "block_ms": block_ms,
                "claim_idle_ms": claim_idle_ms,
                "max_deliveries": max_deliveries,
                "health_ttl_s": health_ttl_s,
                "dead_letter_maxlen": dead_letter_maxlen,
            },
            {"claim_every_s": claim_every_s, "handler_timeout_s": handler_timeout_s},
            shutdown_grace_s,
            stages,
        )
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
        self._dead_letter_maxlen = dead_letter_maxlen
        self._shutdown_grace_s = shutdown_grace_s
        self._outage_backoff = Backoff(*outage_backoff_s)  # (first, cap) while a dependency is down

        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        # Prometheus series per stage, bound once (pipeline/metrics.py).
        self._metrics = {s.name: StageMetrics(s.name) for s in self._stages}
        self._jobs = Jobs(tuple(jobs), cancel_bound_s=_CANCEL_BOUND_S)
        self._stop_event = asyncio.Event()
        self._force_event = asyncio.Event()
        self._slots = Slots(concurrency, self._stop_event)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handling: set[Key] = set()  # (stream, group, id) with a task
        self._owned = Ownership(redis, self.consumer, claim_idle_ms=claim_idle_ms)
        self._signals: list[signal.Signals] = []
        self._heartbeat = Heartbeat(redis, self.consumer, ttl_s=health_ttl_s, snapshot=self._health)
        self._started_at = ""
        self._running = False
        self._log = logger.bind(consumer=self.consumer)
        self._jobs.bind_log(self._log)
        self._intake = Intake(
            redis,
            self._stages,
            consumer=self.consumer,
            slots=self._slots,
            stop=self._stop_event,
            hand_over=self._start,
            handling=self._handling,
            stats=self.stats,
            batch=batch,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
            claim_every_s=claim_every_s,
            log=self._log,
        )
        self._acks = Acks(
            redis,
            metrics=self._metrics,
            stats=self.stats,
            owned=self._owned,
            handler_timeout_s=handler_timeout_s,
            dead_letter_maxlen=dead_letter_maxlen,
            log=self._log,
        )

    # ----------------------------------------------------------------- public API

    @property
    def in_flight(self) -> int:
        """Entries being handled right now."""
        return len(self._handling)

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
        intake = self._intake.start()
        keepalive = asyncio.create_task(self._owned.keepalive_loop(), name="worker-keepalive")
        health = asyncio.create_task(self._heartbeat.loop(), name="worker-health")
        jobs = self._jobs.start(self._stop_event)
        loops = [*intake, keepalive, health, *jobs]
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
            await self._intake.stop(intake)
            # Tell monitors (and tests) at once that this consumer takes nothing more.
            await self._heartbeat.beat()
            # Handlers and job runs drain side by side, within the same grace.
            await asyncio.gather(
                self._drain(), self._jobs.drain(self._shutdown_grace_s, self._force_event)
            )
        except asyncio.CancelledError:
            # Cancelled from outside: no drain, in-flight entries stay pending for reclaim.
            self._stop_event.set()
            self._force_event.set()
            await self._cancel_all([*intake, *self._tasks])
            await self._jobs.cancel()
            raise
        finally:
            stop_wait.cancel()
            await self._cancel_all([keepalive, health])
            await self._heartbeat.delete()
            self._remove_signal_handlers()
            self._running = False
            self._log.info("worker stopped", **self.stats)
        if crashed is not None:
            raise crashed

    # ------------------------------------------------------------------ intake

    # --------------------------------------------------------------- handling

    def _start(self, stage: Stage, entries: list[StreamEntry], via: str) -> int:
        """Hand `entries` to the stage: all in one task for a batch stage, one task each
        otherwise. An entry's slot is released once it is settled; returns how many started."""
        if not entries:
            return 0
        units = [entries] if stage.batched else [[entry] for entry in entries]
        metrics = self._metrics[stage.name]
        metrics.deliveries[via].inc(len(entries))
        metrics.in_flight.inc(len(entries))
        for unit in units:
            keys = {(stage.stream, stage.group, entry.entry_id) for entry in unit}
            self._handling.update(keys)
            self._owned.hold(keys)
            task = asyncio.create_task(
                self._process(stage, unit, keys), name=f"worker:{stage.name}:{unit[0].entry_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._reap, keys, metrics=metrics))
        return len(entries)

    def _release(self, keys: set[Key], metrics: StageMetrics) -> None:
        """Entries settled (or abandoned): no longer ours to keep, their slots free again."""
        self._handling.difference_update(keys)
        self._owned.let_go(keys)
        self._slots.release(len(keys))
        metrics.in_flight.dec(len(keys))
        keys.clear()

    def _reap(self, keys: set[Key], task: asyncio.Task[None], *, metrics: StageMetrics) -> None:
        self._tasks.discard(task)
        self._release(keys, metrics)  # what the task did not settle (cancelled, crashed)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.opt(exception=exc).error("entry task crashed")

    async def _process(self, stage: Stage, entries: list[StreamEntry], keys: set[Key]) -> None:
        """Handle `entries` (one, or a batch) and settle each by its outcome: acked, retried
        or dead-lettered. Entries whose dependency is down are run again in place after a
        wait (the keepalive keeps them ours, so an outage costs no delivery however long it
        lasts; each try gets the full handler timeout) while the others are settled at once.
        At stop the last error stands: the entry stays pending for whoever runs next."""
        dead: list[Dead] = []
        pending: list[StreamEntry] = []
        for entry in entries:
            if entry.poison is not None:
                self._acks.entry_log(stage, entry).warning(
                    "entry can never be handled", reason=entry.poison
                )
                dead.append((entry, entry.poison, "poison"))
            elif entry.deliveries > self._max_deliveries:
                key = (stage.stream, stage.group, entry.entry_id)
                error = self._acks.last_error(key) or "exceeded MAX_DELIVERIES"
                dead.append((entry, error, "max_deliveries"))
            else:
                pending.append(entry)
        began = time.monotonic()
        if dead:
            await self._settle(stage, [], {}, began, dead, keys)
        backoff = self._outage_backoff.waits()
        while pending:
            got = await self._attempt(stage, pending)
            waiting = [e for e in pending if _outage(got[e.entry_id]) is not None]
            if self._stop_event.is_set():
                waiting = []
            await self._settle(
                stage, [e for e in pending if e not in waiting], got, began, [], keys
            )
            if not waiting:
                return
            self.stats["outage_waits"] += 1
            self._metrics[stage.name].outage_waits.inc()
            delay = backoff.next()
            self._acks.entry_log(stage, waiting[0]).warning(
                "dependency unavailable; retrying in place (no delivery spent)",
                reason=mask(str(_outage(got[waiting[0].entry_id]))),
                retry_in_s=round(delay, 2),
                entries=len(waiting),
            )
            if await self._sleep(delay):
                await self._settle(stage, waiting, got, began, [], keys)
                return
            pending = waiting

    async def _settle(
        self,
        stage: Stage,
        entries: list[StreamEntry],
        outcomes: Outcomes,
        began: float,
        dead: list[Dead],
        keys: set[Key],
    ) -> None:
        """Ack, retry or dead-letter `entries` and `dead`, then release them."""
        settled = {(stage.stream, stage.group, e.entry_id) for e in entries}
        settled.update((stage.stream, stage.group, d[0].entry_id) for d in dead)
        # No more keepalive touches from here: one racing a retry's defer would undo it.
        self._owned.let_go(settled)
        done = await self._acks.settle(stage, entries, outcomes, began, dead)
        if done:
            await self._acks.ack(stage, done, began)
        if dead:
            await self._acks.dead_letter(stage, dead)
        mine = settled & keys
        keys.difference_update(mine)
        self._release(mine, self._metrics[stage.name])

    async def _attempt(self, stage: Stage, entries: list[StreamEntry]) -> Outcomes:
        """One try of the handler over `entries`: an outcome for each."""
        outcomes: Outcomes = {}
        timeout = asyncio.timeout(self._handler_timeout_s)
        fill: BaseException
        try:
            # Every line the handler logs, however deep (stages, clients, the SDK through
            # the stdlib intercept), and its tasks', carries the stage (and the trade, for
            # one entry; a batch stage binds each trade itself).
            with logger.contextualize(**_entry_context(stage, entries)):
                async with timeout:
                    await stage.run(entries, outcomes)
            fill = RuntimeError("the handler reported no outcome")
        except (Retry, Drop) as exc:
            fill = exc
        except Exception as exc:
            fill = HandlerTimedOut() if timeout.expired() else exc
        for entry in entries:
            outcomes.setdefault(entry.entry_id, fill)
        return outcomes

    # --------------------------------------------------------- housekeeping

    def _health(self) -> dict[str, Any]:
        """What the health key shows."""
        return {
            "consumer": self.consumer,
            "stages": [s.name for s in self._stages],
            "pid": os.getpid(),
            "started_at": self._started_at,
            "updated_at": iso(utcnow()),
            "in_flight": len(self._handling),
            "stopping": self._stop_event.is_set(),
            "stats": self.stats,
            "jobs": self._jobs.state(),
        }

    # ------------------------------------------------------------- shutdown

    async def _drain(self) -> None:
        """Wait for in-flight handlers up to the grace time; the rest stay pending."""
        deadline = time.monotonic() + self._shutdown_grace_s
        if self._tasks:
            self._log.info("draining in-flight entries", in_flight=len(self._handling))
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
                in_flight=len(self._handling),
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

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stop() is called first; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)
        return self._stop_event.is_set()


def _entry_context(stage: Stage, entries: list[StreamEntry]) -> dict[str, str]:
    context = {"stage": stage.name}
    if len(entries) == 1 and "trade_id" in entries[0].fields:
        context["trade_id"] = entries[0].fields["trade_id"]
    return context


def _outage(exc: BaseException | None) -> str | None:
    """Why `exc` means a dependency is down (the entry waits in place), or None."""
    if exc is None or isinstance(exc, Retry | Drop | HandlerTimedOut):
        return None
    if isinstance(exc, Unavailable):
        return str(exc)
    return outage_reason(exc) if isinstance(exc, Exception) else None
