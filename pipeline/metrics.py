"""Prometheus metrics of the pipeline process, and of beat through Redis.

Two kinds, and docs/metrics.md says which is which:

* **Per process** (counters, histograms, in-flight gauges): what *this* pipeline process
  did. With several processes, `sum()` them across instances.
* **Global** (the `Sampler`'s gauges): read every METRICS_SAMPLE_EVERY_S from Redis (stream
  length, group lag and pending), from the `stake_actions` table (decisions by status,
  extrinsics by outcome, skips by reason, oldest unsettled extrinsic) and from the keys beat
  writes after each run. Every process reports the same values: take `max()`, never sum.

The stake metrics come from the database rather than from events: the table is the record
of every decision (a redelivered or replayed trade announces `stake_executed` again, and a
per-process event counter would count it twice), and it survives restarts.

Beat (Celery, a forking worker) serves no endpoint of its own: each run leaves its counts in
Redis (`schedule:runs`, `schedule:errors`, `schedule:last_run`), which the pipeline exposes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
from loguru import logger
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.chain.staking_types import NOT_SENT_MESSAGE
from shared.constants import (
    GROUP_SENTIMENT,
    GROUP_STAKE,
    GROUP_TWEETS,
    KEY_SCHEDULE_LAST,
    KEY_SCHEDULE_RUNS,
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_TWEETS_FETCHED,
)
from shared.events import text
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "DEFAULT_PORT",
    "KEY_SCHEDULE_ERRORS",
    "SKIP_REASONS",
    "SNAPSHOT",
    "JobMetrics",
    "MetricsServer",
    "Sampler",
    "StageMetrics",
    "install_http_metrics",
    "set_pipeline_info",
]

DEFAULT_PORT: Final = 9108  # METRICS_PORT
# Beat increments it when a run fails (the pipeline exposes it as taostake_schedule_errors_total).
KEY_SCHEDULE_ERRORS: Final = "schedule:errors"

# Handlers call outside APIs and the chain: milliseconds to minutes (a stake submit is bounded
# by STAKE_SUBMIT_TIMEOUT_S, 120 s by default).
STAGE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
API_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)

STAGE_OUTCOMES: Final = ("done", "retry", "failed", "timeout", "dead_lettered")
DEAD_LETTER_REASONS: Final = ("max_deliveries", "dropped", "poison")
DELIVERY_VIA: Final = ("read", "reclaim")
WORKER_REDIS_OPS: Final = ("read", "reclaim", "ack", "dead_letter")
API_SERVICES: Final = ("datura", "chutes")
API_OUTCOMES: Final = (
    "ok",
    "timeout",
    "connection_error",
    "http_429",
    "http_4xx",
    "http_5xx",
    "http_3xx",
    "http_other",
    "invalid_response",
)

# Every status a stake_actions row can hold; submitted extrinsics are the last five
# (`included`: in a finalized block, outcome unreadable, waiting for an operator).
STAKE_STATUSES: Final = (
    "skipped",
    "rejected",
    "dry_run",
    "submitting",
    "unknown",
    "included",
    "succeeded",
    "failed",
)
EXTRINSIC_OUTCOMES: Final = ("submitting", "unknown", "included", "succeeded", "failed")
UNSETTLED_STATUSES: Final = ("submitting", "unknown")

# Why a stake decision was "skipped", as a bounded label: (label, SQL LIKE pattern on the
# stored reason). First match wins; anything else is "other". The patterns follow the reasons
# written by pipeline/stages/{decision,risk,stake}.py.
SKIP_REASONS: Final[tuple[tuple[str, str], ...]] = (
    ("no_score", "no usable sentiment score%"),
    ("neutral", "neutral sentiment%"),
    ("zero_amount", "score % sizes to 0 TAO%"),
    ("dead_band", "score % is inside the dead band%"),
    ("not_allowlisted", "netuid % is not in TRADE_NETUIDS%"),
    ("stale", "stale:%"),
    ("cooldown", "cooldown:%"),
    ("daily_limit", "daily limit:%"),
    ("position_cap", "position cap:%"),
    ("staking_disabled", "staking disabled%"),
    ("insufficient_balance", "insufficient free balance%"),
    ("nothing_to_unstake", "nothing to unstake%"),
    ("no_price", "no usable price%"),
    ("no_wallet", "%: nothing submitted"),
)
SKIP_REASON_LABELS: Final = (*(label for label, _ in SKIP_REASONS), "other")

# Streams the stage groups read, and every stream whose length is worth watching.
GROUP_STREAMS: Final = (
    (STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS),
    (STREAM_TWEETS_FETCHED, GROUP_SENTIMENT),
    (STREAM_SENTIMENT_SCORED, GROUP_STAKE),
)
ALL_STREAMS: Final = (
    STREAM_DIVIDEND_REQUESTED,
    STREAM_TWEETS_FETCHED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_DEAD_LETTER,
)

# ---------------------------------------------------------------- per-process metrics

STAGE_DELIVERIES = Counter(
    "taostake_stage_deliveries_total",
    "Stream entries this process handed to a stage handler (via=read: new entry, "
    "via=reclaim: taken over from a consumer that went quiet)",
    ["stage", "via"],
)
STAGE_ENTRIES = Counter(
    "taostake_stage_entries_total",
    "Entries this process finished, by outcome (done=acked, retry=left pending on request, "
    "failed=handler error, timeout=handler ran past WORKER_HANDLER_TIMEOUT_S, dead_lettered)",
    ["stage", "outcome"],
)
STAGE_DEAD_LETTERS = Counter(
    "taostake_stage_dead_letters_total",
    "Entries this process moved to stream:dead_letter, by reason",
    ["stage", "reason"],
)
STAGE_SECONDS = Histogram(
    "taostake_stage_handler_duration_seconds",
    "Time from a handler's start to its outcome (ack included; in-place retries during a "
    "dependency outage included)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
STAGE_OUTAGE_WAITS = Counter(
    "taostake_stage_outage_waits_total",
    "In-place retries of a handler while a dependency was unavailable (no delivery spent)",
    ["stage"],
)
STAGE_IN_FLIGHT = Gauge(
    "taostake_stage_in_flight", "Handlers running in this process right now", ["stage"]
)
WORKER_REDIS_ERRORS = Counter(
    "taostake_worker_redis_errors_total",
    "Redis errors of this process's consumer loop, by operation",
    ["op"],
)
API_SECONDS = Histogram(
    "taostake_external_request_duration_seconds",
    "Latency of one HTTP attempt to an outside API (failed attempts included)",
    ["service"],
    buckets=API_BUCKETS,
)
API_REQUESTS = Counter(
    "taostake_external_requests_total",
    "HTTP attempts to an outside API by outcome (retries are attempts of their own)",
    ["service", "outcome"],
)
API_FAILURES = Counter(
    "taostake_external_request_failures_total",
    "Outside-API calls that failed for good (retries spent or not retryable), by error code",
    ["service", "error"],
)
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
JOB_RUNS = Counter(
    "taostake_job_runs_total",
    "Runs of the worker's periodic jobs in this process, by outcome (ok, failed=raised, "
    "timeout=cut at the job's timeout, cancelled=cut at shutdown)",
    ["job", "outcome"],
)
JOB_SECONDS = Histogram(
    "taostake_job_duration_seconds",
    "Time one run of a periodic job took, whatever its outcome",
    ["job"],
    buckets=STAGE_BUCKETS,
)
JOB_LAST_SUCCESS = Gauge(
    "taostake_job_last_success_timestamp_seconds",
    "Unix time the last successful run of a periodic job ended in this process",
    ["job"],
)
PIPELINE_INFO = Info(
    "taostake_pipeline", "This pipeline process: its consumer name and the stages it runs"
)

SAMPLE_SOURCES: Final = ("streams", "database", "schedule")

for _service in API_SERVICES:
    API_SECONDS.labels(_service)
    API_REQUESTS.labels(_service, "ok")
for _op in WORKER_REDIS_OPS:
    WORKER_REDIS_ERRORS.labels(_op)
for _source in SAMPLE_SOURCES:
    SAMPLE_ERRORS.labels(_source)


class StageMetrics:
    """One stage's series, bound to their labels once: the consumer loop pays no label lookup."""

    __slots__ = ("dead_letters", "deliveries", "in_flight", "latency", "outage_waits", "outcomes")

    def __init__(self, stage: str) -> None:
        self.deliveries = {via: STAGE_DELIVERIES.labels(stage, via) for via in DELIVERY_VIA}
        self.outcomes = {name: STAGE_ENTRIES.labels(stage, name) for name in STAGE_OUTCOMES}
        self.dead_letters = {r: STAGE_DEAD_LETTERS.labels(stage, r) for r in DEAD_LETTER_REASONS}
        self.latency = STAGE_SECONDS.labels(stage)
        self.outage_waits = STAGE_OUTAGE_WAITS.labels(stage)
        self.in_flight = STAGE_IN_FLIGHT.labels(stage)

    def finished(self, outcome: str, began: float) -> None:
        """Count an outcome and observe the handler's time since `began` (monotonic)."""
        self.outcomes[outcome].inc()
        self.latency.observe(time.monotonic() - began)


JOB_OUTCOMES: Final = ("ok", "failed", "timeout", "cancelled")


class JobMetrics:
    """One periodic job's series (pipeline/jobs.py), bound to their labels once."""

    __slots__ = ("last_success", "latency", "outcomes")

    def __init__(self, job: str) -> None:
        self.outcomes = {name: JOB_RUNS.labels(job, name) for name in JOB_OUTCOMES}
        self.latency = JOB_SECONDS.labels(job)
        self.last_success = JOB_LAST_SUCCESS.labels(job)

    def finished(self, outcome: str, seconds: float) -> None:
        self.outcomes[outcome].inc()
        self.latency.observe(seconds)
        if outcome == "ok":
            self.last_success.set(time.time())


def set_pipeline_info(consumer: str, stages: Iterable[str]) -> None:
    PIPELINE_INFO.info({"consumer": consumer, "stages": ",".join(stages)})


# ----------------------------------------------------------- outside-API observer


class _HTTPMetrics:
    """Receives pipeline/clients/http.py's per-attempt and per-failure notices."""

    def attempt(self, service: str, outcome: str, seconds: float) -> None:
        API_REQUESTS.labels(service, outcome).inc()
        API_SECONDS.labels(service).observe(seconds)

    def failed(self, service: str, error: str) -> None:
        API_FAILURES.labels(service, error).inc()


def install_http_metrics() -> None:
    """Count every outside-API call of this process (idempotent)."""
    from pipeline.clients import http

    http.set_request_observer(_HTTPMetrics())


# ------------------------------------------------------------------ global gauges


class _Snapshot(Collector):
    """The sampler's latest families per source, swapped whole: a series that is gone from
    Redis or the database disappears here too, and a failed read leaves no stale value."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[Metric, ...]] = {}

    def replace(self, source: str, families: Iterable[Metric]) -> None:
        self._parts = {**self._parts, source: tuple(families)}

    def drop(self, source: str) -> None:
        self._parts = {k: v for k, v in self._parts.items() if k != source}

    def collect(self) -> Iterator[Metric]:
        for families in self._parts.values():
            yield from families

    def describe(self) -> Iterator[Metric]:
        yield from _stream_families({}, [])
        yield from _stake_families({}, {}, 0.0)
        yield from _schedule_families(None, None, None)


@dataclass(frozen=True, slots=True)
class GroupState:
    stream: str
    group: str
    consumers: int
    pending: int
    lag: int | None  # None when Redis cannot tell (Redis < 7, or after XSETID/deletions)
    oldest_pending_age_s: float


def _stream_families(lengths: Mapping[str, int], groups: Iterable[GroupState]) -> list[Metric]:
    length = GaugeMetricFamily(
        "taostake_stream_length", "Entries in the stream (XLEN); global", labels=["stream"]
    )
    lag = GaugeMetricFamily(
        "taostake_stream_group_lag",
        "Entries of the stream not yet delivered to the group (XINFO GROUPS lag); global",
        labels=["stream", "group"],
    )
    pending = GaugeMetricFamily(
        "taostake_stream_group_pending",
        "Entries delivered to the group and not acked yet; global",
        labels=["stream", "group"],
    )
    consumers = GaugeMetricFamily(
        "taostake_stream_group_consumers",
        "Consumers known to the group (dead ones stay until removed); global",
        labels=["stream", "group"],
    )
    oldest = GaugeMetricFamily(
        "taostake_stream_group_oldest_pending_age_seconds",
        "Age (since it entered the stream) of the oldest entry pending in the group, "
        "0 when none; global",
        labels=["stream", "group"],
    )
    for stream, value in lengths.items():
        length.add_metric([stream], value)
    for state in groups:
        labels = [state.stream, state.group]
        pending.add_metric(labels, state.pending)
        consumers.add_metric(labels, state.consumers)
        oldest.add_metric(labels, state.oldest_pending_age_s)
        if state.lag is not None:
            lag.add_metric(labels, state.lag)
    return [length, lag, pending, consumers, oldest]


def _stake_families(
    by_status: Mapping[str, int],
    skips: Mapping[str, int],
    oldest_unsettled_s: float,
    not_sent: int = 0,
) -> list[Metric]:
    """`not_sent`: the `failed` rows whose extrinsic was never sent (no on-chain failure)."""
    actions = GaugeMetricFamily(
        "taostake_stake_actions",
        "Stored stake decisions (stake_actions rows) by status; global, from the database",
        labels=["status"],
    )
    extrinsics = GaugeMetricFamily(
        "taostake_stake_extrinsics",
        "Submitted stake extrinsics by outcome (submitting/unknown: not settled yet; "
        "failed leaves out the rows never sent); global",
        labels=["outcome"],
    )
    skipped = GaugeMetricFamily(
        "taostake_stake_skips",
        "Stake decisions skipped without submitting, by reason; global",
        labels=["reason"],
    )
    oldest = GaugeMetricFamily(
        "taostake_stake_oldest_unsettled_age_seconds",
        "Age of the oldest submitted extrinsic whose outcome is not known yet, 0 when none "
        "(its coldkey submits nothing else meanwhile); global",
    )
    if by_status or skips:
        statuses = dict.fromkeys(STAKE_STATUSES, 0) | dict(by_status)
        for status, count in statuses.items():
            actions.add_metric([status], count)
        for outcome in EXTRINSIC_OUTCOMES:
            count = statuses.get(outcome, 0) - (not_sent if outcome == "failed" else 0)
            extrinsics.add_metric([outcome], max(0, count))
        for reason, count in (dict.fromkeys(SKIP_REASON_LABELS, 0) | dict(skips)).items():
            skipped.add_metric([reason], count)
        oldest.add_metric([], oldest_unsettled_s)
    return [actions, extrinsics, skipped, oldest]


def _schedule_families(
    runs: int | None, errors: int | None, last: Mapping[str, Any] | None
) -> list[Metric]:
    runs_total = CounterMetricFamily(
        "taostake_schedule_runs",
        "Completed beat re-scoring runs (kept in Redis by beat); global",
    )
    errors_total = CounterMetricFamily(
        "taostake_schedule_errors",
        "Beat re-scoring runs that failed (kept in Redis by beat); global",
    )
    last_at = GaugeMetricFamily(
        "taostake_schedule_last_run_timestamp_seconds",
        "Unix time of the last completed beat run; global",
    )
    duration = GaugeMetricFamily(
        "taostake_schedule_last_run_duration_seconds", "Duration of the last beat run; global"
    )
    tracked = GaugeMetricFamily(
        "taostake_schedule_last_run_tracked_pairs",
        "(netuid, hotkey) pairs the last beat run looked at; global",
    )
    enqueued = GaugeMetricFamily(
        "taostake_schedule_last_run_enqueued_trades",
        "Trades the last beat run enqueued (the others were inside their cooldown); global",
    )
    interval = GaugeMetricFamily(
        "taostake_schedule_interval_seconds",
        "RESCORE_INTERVAL_S of the beat that ran last; global",
    )
    if runs is not None:
        runs_total.add_metric([], runs)
    if errors is not None:
        errors_total.add_metric([], errors)
    if last:
        at = last.get("at_unix")
        if isinstance(at, int | float):
            last_at.add_metric([], float(at))
        for family, key in (
            (duration, "duration_s"),
            (tracked, "tracked"),
            (interval, "interval_s"),
        ):
            value = last.get(key)
            if isinstance(value, int | float):
                family.add_metric([], float(value))
        if isinstance(last.get("enqueued"), list):
            enqueued.add_metric([], len(last["enqueued"]))
    return [runs_total, errors_total, last_at, duration, tracked, enqueued, interval]


SNAPSHOT = _Snapshot()
REGISTRY.register(SNAPSHOT)


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
        return _stream_families(lengths, groups)

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
        return _stake_families(by_status, skips, oldest_s, not_sent)

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
        return _schedule_families(_int(runs) or 0, _int(errors) or 0, last)


def _server_ms(reply: Any) -> int:
    """Redis TIME as ms (entry ids carry the server's clock); ours if the reply is odd."""
    if isinstance(reply, tuple | list) and len(reply) == 2:
        seconds, micros = _int(reply[0]), _int(reply[1])
        if seconds is not None and micros is not None:
            return seconds * 1000 + micros // 1000
    return int(time.time() * 1000)


# --------------------------------------------------------------------- exposition


class MetricsServer:
    """GET /metrics (Prometheus text format) on host:port, stopped within a bound."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/", _index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, shutdown_timeout=1.0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:  # an ephemeral port (tests): report the one the OS chose
            sockets = [s for server in runner.sites for s in _sockets(server)]
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    async def stop(self, *, timeout_s: float = 5.0) -> bool:
        """Close the listener and open scrapes; True when it finished within `timeout_s`."""
        runner, self._runner = self._runner, None
        if runner is None:
            return True
        cleanup = asyncio.ensure_future(runner.cleanup())
        done, _ = await asyncio.wait({cleanup}, timeout=timeout_s)
        if not done:
            await cancel_and_wait([cleanup], timeout_s=1.0)
            return False
        if not cleanup.cancelled() and cleanup.exception() is not None:
            logger.opt(exception=cleanup.exception()).warning("metrics server stop failed")
        return True


def _sockets(site: Any) -> list[Any]:
    server = getattr(site, "_server", None)
    return list(getattr(server, "sockets", None) or [])


async def _metrics(_request: web.Request) -> web.Response:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _index(_request: web.Request) -> web.Response:
    from aiohttp import web

    return web.Response(text="taostake pipeline: metrics at /metrics\n")
