"""Periodic re-scoring with Celery beat: the only Celery part of the service.

Every RESCORE_INTERVAL_S the `rescore` task publishes `dividend_requested`
(source=schedule) for the tracked pairs — those traded within RESCORE_WINDOW_S
plus WATCHLIST — through the same cooldown reservation as the gateway. Chain
and stake work stays on the streams.

Celery 5 tasks are synchronous: each worker process owns one event loop and one
Redis client, created after the fork (`worker_process_init`) and closed at exit.

Metrics: beat serves no endpoint. Celery runs the task in a forked pool process and beat
in another, so an in-process registry would be split and reset by Celery's own restarts.
Each run instead leaves its counts in Redis (`schedule:runs`, `schedule:errors`, and
`schedule:last_run` with its time, duration and interval), and every pipeline process
exposes them on its METRICS_PORT as the `taostake_schedule_*` metrics (docs/metrics.md):
one scrape target fewer, and counts that survive a beat restart.

    celery -A pipeline.schedule worker --beat --loglevel=INFO --concurrency=1
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown
from loguru import logger
from redis.asyncio import Redis

from pipeline.metrics import KEY_SCHEDULE_ERRORS
from shared.constants import KEY_SCHEDULE_LAST, KEY_SCHEDULE_RUNS, KEY_TRADED_PAIRS
from shared.events import DividendRequested
from shared.ids import iso, new_id, utcnow
from shared.logbuffer import flush_logs
from shared.logging import configure_logging
from shared.redis import create_redis
from shared.settings import Settings, get_settings
from shared.signing import SigningKeyMissing, configure_signing
from shared.ss58 import normalize_ss58
from shared.trades import TradeTrigger


@dataclass
class RescoreSummary:
    tracked: int = 0
    enqueued: list[str] = field(default_factory=list)  # trade ids
    cooling: int = 0
    ignored: list[str] = field(default_factory=list)  # unusable WATCHLIST entries


def parse_pair(text: str) -> tuple[int, str] | None:
    netuid_text, _, hotkey = text.strip().partition(":")
    if not netuid_text.isdigit() or int(netuid_text) > 65535:
        return None
    try:
        return int(netuid_text), normalize_ss58(hotkey)
    except ValueError:
        return None


async def tracked_pairs(
    redis: Redis, settings: Settings, now: float
) -> tuple[list[tuple[int, str]], list[str]]:
    """Pairs traded within the window (stale ones pruned) plus the watchlist, without repeats."""
    cutoff = now - settings.rescore_window_s
    await redis.zremrangebyscore(KEY_TRADED_PAIRS, "-inf", f"({cutoff}")
    members = await redis.zrangebyscore(KEY_TRADED_PAIRS, cutoff, "+inf")
    pairs: dict[tuple[int, str], None] = {}
    for member in members:
        pair = parse_pair(member.decode() if isinstance(member, bytes) else str(member))
        if pair is not None:
            pairs[pair] = None
    ignored = []
    for item in filter(None, (part.strip() for part in settings.watchlist.split(","))):
        pair = parse_pair(item)
        if pair is None:
            ignored.append(item)
        else:
            pairs[pair] = None
    return list(pairs), ignored


async def rescore(redis: Redis, settings: Settings) -> RescoreSummary:
    began = time.monotonic()
    pairs, ignored = await tracked_pairs(redis, settings, time.time())
    summary = RescoreSummary(tracked=len(pairs), ignored=ignored)
    for item in ignored:
        logger.warning("WATCHLIST entry ignored (expected NETUID:SS58_HOTKEY): {}", item)
    trigger = TradeTrigger(
        redis, cooldown_s=settings.trade_cooldown_s, maxlen=settings.stream_maxlen
    )
    for netuid, hotkey in pairs:
        event = DividendRequested(
            trade_id=new_id(), netuid=netuid, hotkey=hotkey, source="schedule"
        )
        result = await trigger.trigger(event)
        if result.enqueued:
            summary.enqueued.append(result.trade_id)
        else:
            summary.cooling += 1
    await redis.incr(KEY_SCHEDULE_RUNS)
    last = {
        "at": iso(utcnow()),
        **asdict(summary),
        # For the pipeline's taostake_schedule_* gauges.
        "at_unix": time.time(),
        "duration_s": round(time.monotonic() - began, 6),
        "interval_s": settings.rescore_interval_s,
    }
    await redis.set(KEY_SCHEDULE_LAST, orjson.dumps(last))
    if not pairs:
        logger.info("rescore: nothing tracked (no recent trades, empty WATCHLIST); nothing to do")
    else:
        logger.info(
            "rescore: {} tracked pairs, {} enqueued, {} inside their cooldown",
            summary.tracked,
            len(summary.enqueued),
            summary.cooling,
        )
    return summary


settings = get_settings()
app = Celery("taostake", broker=settings.redis_url)
app.conf.update(
    beat_schedule={
        "rescore-tracked-subnets": {
            "task": "pipeline.schedule.rescore_task",
            "schedule": float(settings.rescore_interval_s),
        }
    },
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    timezone="UTC",
)

_loop: asyncio.AbstractEventLoop | None = None
_redis: Redis | None = None


@worker_init.connect
def require_signing_key(**_: Any) -> None:
    """Beat publishes trades: without EVENT_SIGNING_KEY it must not start at all.

    SystemExit, because Celery logs and swallows an Exception raised by a signal handler.
    """
    try:
        configure_signing(settings)
    except SigningKeyMissing as exc:
        raise SystemExit(f"beat not started: {exc}") from exc


@worker_process_init.connect
def _open(**_: Any) -> None:
    global _loop, _redis
    configure_logging(settings)
    require_signing_key()
    _loop = asyncio.new_event_loop()
    _redis = create_redis(settings)


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    global _loop, _redis
    if _loop is not None and _redis is not None:
        _loop.run_until_complete(_redis.aclose())
        _loop.close()
    _loop = _redis = None
    flush_logs()  # the pool child ends with os._exit: no atexit writes what waits


async def _count_failure(redis: Redis) -> None:
    """Best effort: Redis itself may be what failed (the last-run age tells then)."""
    try:
        await redis.incr(KEY_SCHEDULE_ERRORS)
    except Exception as exc:
        logger.warning("could not count the failed rescore run: {}", type(exc).__name__)


@app.task(name="pipeline.schedule.rescore_task")
def rescore_task() -> dict[str, Any]:
    if _loop is None or _redis is None:
        _open()
    assert _loop is not None and _redis is not None
    try:
        return asdict(_loop.run_until_complete(rescore(_redis, settings)))
    except Exception:
        _loop.run_until_complete(_count_failure(_redis))
        raise
