"""What happens to entries once their handler is done with them: counted, logged, and acked
(one XACK for all done), left pending for a retry, or moved to the dead letters (one
MULTI/EXEC for all: XADD of each `DeadLetter`, XACK of the originals)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipeline.entries import Drop, Outcomes, Retry, Stage, StreamEntry
from pipeline.metrics import WORKER_REDIS_ERRORS, StageMetrics
from pipeline.ownership import Key, Ownership
from shared.constants import STREAM_DEAD_LETTER
from shared.events import DeadLetter
from shared.logging import mask

if TYPE_CHECKING:
    from loguru import Logger

# Last errors are kept per entry until it is acked or dead-lettered; entries that
# another consumer finishes would otherwise accumulate, so the map is bounded.
_LAST_ERRORS_MAX: Final = 10_000

Dead = tuple[StreamEntry, str, str]  # (entry, error, why: max_deliveries | dropped | poison)


class HandlerTimedOut(Exception):
    """One try of a handler ran past WORKER_HANDLER_TIMEOUT_S."""


class Acks:
    """Settles one worker's entries; keeps each pending entry's last error for its dead letter."""

    def __init__(
        self,
        redis: Redis,
        *,
        metrics: dict[str, StageMetrics],
        stats: dict[str, int],
        owned: Ownership,
        handler_timeout_s: float,
        dead_letter_maxlen: int,
        log: Logger,
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._stats = stats
        self._owned = owned
        self._handler_timeout_s = handler_timeout_s
        self._dead_letter_maxlen = dead_letter_maxlen
        self._log = log
        self._last_errors: OrderedDict[Key, str] = OrderedDict()

    def last_error(self, key: Key) -> str | None:
        """The error of the entry's last try here, forgotten once read."""
        return self._last_errors.pop(key, None)

    async def settle(
        self,
        stage: Stage,
        entries: list[StreamEntry],
        outcomes: Outcomes,
        began: float,
        dead: list[tuple[StreamEntry, str, str]],
    ) -> list[StreamEntry]:
        """Count and log each entry's outcome; returns the ones to ack, adds to `dead`."""
        metrics = self._metrics[stage.name]
        done: list[StreamEntry] = []
        for entry in entries:
            exc = outcomes[entry.entry_id]
            if exc is None:
                done.append(entry)
                continue
            key = (stage.stream, stage.group, entry.entry_id)
            log = self.entry_log(stage, entry)
            if isinstance(exc, Retry):
                self._stats["retried"] += 1
                metrics.finished("retry", began)
                self._remember_error(key, f"Retry: {exc.reason}")
                log.warning("entry retry", reason=mask(exc.reason), defer_s=exc.defer_s)
                if exc.defer_s > 0:
                    await self._owned.defer(stage.stream, stage.group, [key[2]], exc.defer_s)
            elif isinstance(exc, Drop):
                metrics.latency.observe(time.monotonic() - began)
                log.warning("entry dropped by handler", reason=mask(str(exc)))
                dead.append((entry, f"Drop: {exc}", "dropped"))
            elif isinstance(exc, HandlerTimedOut):
                self._stats["failed"] += 1
                metrics.finished("timeout", began)
                error = f"handler timed out after {self._handler_timeout_s:g} s"
                log.error("entry failed", error=error)
                self._remember_error(key, error)
            else:
                self._stats["failed"] += 1
                metrics.finished("failed", began)
                error = f"{type(exc).__name__}: {exc}"
                self._remember_error(key, error)
                log.opt(exception=exc).error("entry failed", error=mask(error))
        return done

    async def ack(self, stage: Stage, done: list[StreamEntry], began: float) -> None:
        """XACK the handled entries in one command."""
        metrics = self._metrics[stage.name]
        try:
            acked = await self._redis.xack(stage.stream, stage.group, *(e.entry_id for e in done))
        except (RedisError, OSError) as exc:
            WORKER_REDIS_ERRORS.labels("ack").inc()
            for entry in done:
                self._stats["failed"] += 1
                metrics.finished("failed", began)
                self._remember_error(
                    (stage.stream, stage.group, entry.entry_id), f"ack failed: {exc}"
                )
                self.entry_log(stage, entry).error(
                    "entry done but ack failed; it will be redelivered", error=str(exc)
                )
            return
        elapsed_ms = round((time.monotonic() - began) * 1000, 1)
        for entry in done:
            self._stats["done"] += 1
            metrics.finished("done", began)
            self._last_errors.pop((stage.stream, stage.group, entry.entry_id), None)
            self.entry_log(stage, entry).info("entry done", ms=elapsed_ms)
        if acked < len(done):
            self._log.warning(
                "entries done but no longer pending (reclaimed meanwhile?)",
                stage=stage.name,
                entries=len(done) - int(acked),
            )

    def _remember_error(self, key: Key, error: str) -> None:
        self._last_errors[key] = mask(error)
        self._last_errors.move_to_end(key)
        while len(self._last_errors) > _LAST_ERRORS_MAX:
            self._last_errors.popitem(last=False)

    async def dead_letter(self, stage: Stage, dead: list[tuple[StreamEntry, str, str]]) -> None:
        """XADD each `DeadLetter` and XACK the originals, atomically (MULTI/EXEC).

        `why` labels the metric: max_deliveries | dropped | poison."""
        letters = [
            DeadLetter.of(
                stage.stream,
                stage.group,
                entry.entry_id,
                entry.fields,
                deliveries=entry.deliveries,
                error=mask(error),
            )
            for entry, error, _ in dead
        ]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for letter in letters:
                    pipe.xadd(
                        STREAM_DEAD_LETTER,
                        letter.to_fields(),  # type: ignore[arg-type]
                        maxlen=self._dead_letter_maxlen,
                        approximate=True,
                    )
                pipe.xack(stage.stream, stage.group, *(entry.entry_id for entry, _, _ in dead))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._stats["failed"] += len(dead)
            WORKER_REDIS_ERRORS.labels("dead_letter").inc()
            self._log.error(
                "dead-lettering failed; entries stay pending", stage=stage.name, error=str(exc)
            )
            return
        metrics = self._metrics[stage.name]
        for (entry, _, why), letter in zip(dead, letters, strict=True):
            self._stats["dead_lettered"] += 1
            metrics.outcomes["dead_lettered"].inc()
            metrics.dead_letters[why].inc()
            self._last_errors.pop((stage.stream, stage.group, entry.entry_id), None)
            self.entry_log(stage, entry).error("entry dead-lettered", error=letter.error)

    def entry_log(self, stage: Stage, entry: StreamEntry) -> Logger:
        context: dict[str, Any] = {
            "stage": stage.name,
            "stream": stage.stream,
            "entry_id": entry.entry_id,
            "deliveries": entry.deliveries,
        }
        if "trade_id" in entry.fields:
            context["trade_id"] = entry.fields["trade_id"]
        return self._log.bind(**context)
