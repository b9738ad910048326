"""The sampler: reads the global gauges from Redis, the stake_actions table and beat's keys.

The stake gauges come from the database rather than from events: the table is the record
of every decision (a redelivered or replayed trade announces `stake_executed` again, and a
per-process event counter would count it twice), and it survives restarts. Beat leaves its
counts in Redis after each run (`schedule:runs`, `schedule:errors`, `schedule:last_run`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
from loguru import logger
from prometheus_client import Counter, Gauge
from prometheus_client.core import Metric
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pipeline.metrics.constants import (
    ALL_STREAMS,
    GROUP_STREAMS,
    SAMPLE_SOURCES,
    SKIP_REASONS,
    STAKE_STATUSES,
    UNSETTLED_STATUSES,
)
from pipeline.metrics.snapshot import (
    SNAPSHOT,
    GroupState,
    schedule_families,
    stake_families,
    stream_families,
)
from shared.chain.staking_types import NOT_SENT_MESSAGE
from shared.constants import KEY_SCHEDULE_ERRORS, KEY_SCHEDULE_LAST, KEY_SCHEDULE_RUNS
from shared.events import text

SAMPLE_ERRORS = Counter(
    "taostake_metrics_sample_errors_total",
    "Failed reads of the global gauges, by source (streams, database, schedule)",
    ["source"],
)
LAST_SAMPLE = Gauge(
    "taostake_metrics_last_sample_timestamp_seconds",
    "Unix time of the last successful read of the global gauges, by source",
    ["source"],
)

for _source in SAMPLE_SOURCES:
    SAMPLE_ERRORS.labels(_source)


def _int(value: Any) -> int | None:
    try:
        return int(text(value))
    except (TypeError, ValueError):
        return None


def _skips_sql(table: str) -> str:
    """One row per skip-reason label: classification happens in the database, so the reply
    stays a dozen rows however many skips are stored. Patterns are this module's constants."""
    cases = " ".join(
        f"WHEN reason LIKE '{pattern.replace(chr(39), chr(39) * 2)}' THEN '{label}'"
        for label, pattern in SKIP_REASONS
    )
    return (
        f"SELECT CASE {cases} ELSE 'other' END AS kind, COUNT(*) AS n "  # noqa: S608
        f"FROM {table} WHERE status = 'skipped' GROUP BY 1"
    )


class Sampler:
    """Reads the global gauges; the worker runs `sample_once` every `every_s` as a job
    (pipeline/runner.py). A failed source is counted, logged once per streak and left out of
    the exposition until it reads again."""

    def __init__(self, redis: Redis, *, every_s: float = 15.0, timeout_s: float | None = None):
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self._redis = redis
        self._every_s = every_s
        self._timeout_s = timeout_s if timeout_s is not None else max(1.0, min(every_s, 10.0))
        self._failing: set[str] = set()

    @property
    def every_s(self) -> float:
        return self._every_s

    @property
    def timeout_s(self) -> float:
        """Bound of one source's read; `sample_once` reads the sources concurrently."""
        return self._timeout_s

    async def sample_once(self, *sources: str) -> None:
        """Read the given sources (streams, database, schedule; default: all) concurrently."""
        readers = {
            "streams": self._sample_streams,
            "database": self._sample_database,
            "schedule": self._sample_schedule,
        }
        await asyncio.gather(
            *(self._guarded(source, readers[source]) for source in sources or SAMPLE_SOURCES)
        )

    async def _guarded(self, source: str, read: Any) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                families = await read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            SAMPLE_ERRORS.labels(source).inc()
            SNAPSHOT.drop(source)
            if source not in self._failing:
                self._failing.add(source)
                logger.warning(
                    "metrics: reading global gauges failed; retrying every interval",
                    source=source,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
            return
        SNAPSHOT.replace(source, families)
        LAST_SAMPLE.labels(source).set(time.time())
        if source in self._failing:
            self._failing.discard(source)
            logger.info("metrics: global gauges readable again", source=source)

    async def _sample_streams(self) -> list[Metric]:
        redis = self._redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for stream in ALL_STREAMS:
                pipe.xlen(stream)
            for stream, _ in GROUP_STREAMS:
                pipe.xinfo_groups(stream)
            replies = await pipe.execute(raise_on_error=False)
        now_ms = _server_ms(replies[0])
        lengths = {
            stream: _int(reply) or 0
            for stream, reply in zip(ALL_STREAMS, replies[1 : 1 + len(ALL_STREAMS)], strict=True)
        }
        group_replies = replies[1 + len(ALL_STREAMS) :]
        found: list[tuple[str, Mapping[str, Any]]] = []
        for (stream, _), reply in zip(GROUP_STREAMS, group_replies, strict=True):
            if isinstance(reply, ResponseError):
                continue  # no such stream yet: no group either
            if isinstance(reply, Exception):
                raise reply
            found.extend((stream, group) for group in reply)
        pending_of = [(s, g) for s, g in found if (_int(g.get("pending")) or 0) > 0]
        oldest: dict[tuple[str, str], float] = {}
        if pending_of:
            async with redis.pipeline(transaction=False) as pipe:
                for stream, group in pending_of:
                    pipe.xpending(stream, text(group["name"]))
                summaries = await pipe.execute(raise_on_error=False)
            for (stream, group), summary in zip(pending_of, summaries, strict=True):
                if isinstance(summary, dict) and summary.get("min") is not None:
                    first_ms = _int(text(summary["min"]).split("-", 1)[0]) or now_ms
                    oldest[(stream, text(group["name"]))] = max(0.0, (now_ms - first_ms) / 1000)
        groups = [
            GroupState(
                stream=stream,
                group=text(group["name"]),
                consumers=_int(group.get("consumers")) or 0,
                pending=_int(group.get("pending")) or 0,
                lag=_int(group.get("lag")),
                oldest_pending_age_s=oldest.get((stream, text(group["name"])), 0.0),
            )
            for stream, group in found
        ]
        return stream_families(lengths, groups)

    async def _sample_database(self) -> list[Metric]:
        from tortoise import connections
        from tortoise.functions import Count

        from shared.db.models import StakeAction

        rows = await StakeAction.annotate(n=Count("id")).group_by("status").values("status", "n")
        by_status = {str(row["status"]): int(row["n"]) for row in rows}
        conn = connections.get("default")
        skip_rows = await conn.execute_query_dict(_skips_sql(StakeAction._meta.db_table))
        skips = {str(row["kind"]): int(row["n"]) for row in skip_rows}
        # A `failed` row whose extrinsic was never sent (no connection at submit, a failure
        # or cancellation before it): no extrinsic reached the chain, so it is no on-chain
        # failure. Told apart by its `message`, which only the stake stage writes so.
        not_sent = 0
        if by_status.get("failed"):
            not_sent = await StakeAction.filter(status="failed", message=NOT_SENT_MESSAGE).count()
        oldest_s = 0.0
        if any(by_status.get(status) for status in UNSETTLED_STATUSES):
            first = (
                await StakeAction.filter(status__in=UNSETTLED_STATUSES)
                .order_by("created_at")
                .first()
                .values("submitted_at", "created_at")
            )
            if first:
                since = first["submitted_at"] or first["created_at"]
                oldest_s = max(0.0, time.time() - since.timestamp())
        if not by_status:
            by_status = dict.fromkeys(STAKE_STATUSES, 0)  # an empty table is a real answer
        return stake_families(by_status, skips, oldest_s, not_sent)

    async def _sample_schedule(self) -> list[Metric]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(KEY_SCHEDULE_RUNS)
            pipe.get(KEY_SCHEDULE_ERRORS)
            pipe.get(KEY_SCHEDULE_LAST)
            runs, errors, raw_last = await pipe.execute()
        last: Mapping[str, Any] | None = None
        if raw_last:
            try:
                parsed = orjson.loads(raw_last)
            except orjson.JSONDecodeError:
                parsed = None
            last = parsed if isinstance(parsed, dict) else None
        return schedule_families(_int(runs) or 0, _int(errors) or 0, last)


def _server_ms(reply: Any) -> int:
    """Redis TIME as ms (entry ids carry the server's clock); ours if the reply is odd."""
    if isinstance(reply, tuple | list) and len(reply) == 2:
        seconds, micros = _int(reply[0]), _int(reply[1])
        if seconds is not None and micros is not None:
            return seconds * 1000 + micros // 1000
    return int(time.time() * 1000)
