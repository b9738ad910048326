"""Celery beat re-scoring: the task's choice of pairs, and a short real beat run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from loguru import logger
from redis.asyncio import Redis

from pipeline.schedule import rescore
from shared.constants import KEY_SCHEDULE_RUNS, KEY_TRADED_PAIRS, STREAM_DIVIDEND_REQUESTED
from shared.signing import verify
from tests.conftest import TEST_SIGNING_KEY, make_settings
from tests.fakes.chain import ALICE, BOB, DEFAULT_HOTKEY
from tests.pipeline.conftest import eventually


async def _requested(redis: Redis) -> list[tuple[str, str, str]]:
    entries = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
    return sorted(
        (f[b"netuid"].decode(), f[b"hotkey"].decode(), f[b"source"].decode()) for _, f in entries
    )


async def test_publishes_exactly_the_tracked_pairs_and_respects_the_cooldown(
    redis: Redis, redis_url: str
) -> None:
    now = time.time()
    await redis.zadd(
        KEY_TRADED_PAIRS,
        {f"3:{ALICE}": now - 60, f"4:{BOB}": now - 10, f"5:{ALICE}": now - 10_000, "garbage": now},
    )
    settings = make_settings(
        redis_url,
        "sqlite://:memory:",
        rescore_window_s=3600,
        watchlist=f"18:{DEFAULT_HOTKEY}, 3:{ALICE}, 9:not-a-key",
    )
    first = await rescore(redis, settings)
    assert await _requested(redis) == [
        ("18", DEFAULT_HOTKEY, "schedule"),
        ("3", ALICE, "schedule"),
        ("4", BOB, "schedule"),
    ]
    assert first.tracked == 3 and len(first.enqueued) == 3 and first.ignored == ["9:not-a-key"]
    assert await redis.zscore(KEY_TRADED_PAIRS, f"5:{ALICE}") is None  # stale, pruned
    assert await redis.zscore(KEY_TRADED_PAIRS, f"18:{DEFAULT_HOTKEY}") is None  # not tracked
    second = await rescore(redis, settings)
    assert second.enqueued == [] and second.cooling == 3
    assert len(await _requested(redis)) == 3
    assert int(await redis.get(KEY_SCHEDULE_RUNS)) == 2


async def test_nothing_tracked_does_nothing_and_says_so(redis: Redis, redis_url: str) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        summary = await rescore(redis, make_settings(redis_url, "sqlite://:memory:"))
    finally:
        logger.remove(sink)
    assert summary.tracked == 0 and await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0
    assert any("nothing tracked" in line for line in lines)


async def test_a_real_beat_run_fires_at_least_twice(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "REDIS_URL": redis_url,
        "RESCORE_INTERVAL_S": "1",
        "TRADE_COOLDOWN_S": "1",
        "WATCHLIST": f"3:{ALICE}",
        "DATABASE_URL": f"sqlite://{tmp_path}/db.sqlite3",
        "LOG_LEVEL": "INFO",
        "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "pipeline.schedule",
            "worker",
            "--beat",
            "--concurrency=1",
            "--loglevel=INFO",
            "-s",
            str(tmp_path / "beat-schedule"),
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def fired_twice() -> bool:
            runs = int(await redis.get(KEY_SCHEDULE_RUNS) or 0)
            return runs >= 2 and await redis.xlen(STREAM_DIVIDEND_REQUESTED) >= 2

        await eventually(fired_twice, timeout=40)
    except BaseException:
        proc.kill()
        print(proc.communicate(timeout=10)[0].decode()[-3000:])
        raise
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("celery worker did not stop on SIGTERM")
    sources = {f[b"source"] for _, f in await redis.xrange(STREAM_DIVIDEND_REQUESTED)}
    assert sources == {b"schedule"}
    for _, raw in await redis.xrange(STREAM_DIVIDEND_REQUESTED):  # beat signs what it sends
        verify({k.decode(): v.decode() for k, v in raw.items()}, key=TEST_SIGNING_KEY.encode())
    last = orjson.loads(await redis.get("schedule:last_run"))
    assert last["tracked"] == 1
