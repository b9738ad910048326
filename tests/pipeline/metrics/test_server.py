"""GET /metrics: a scrape of a running worker shows per-process and global series; the
endpoint serves only metrics, survives a taken port and stops within its bound."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loguru import logger
from redis.asyncio import Redis

from pipeline.metrics.server import MetricsServer
from pipeline.runner import StakeSetup, build_worker, serve_metrics
from shared.bus import publish
from shared.constants import (
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_TWEETS_FETCHED,
)
from shared.events import DividendRequested
from shared.ids import new_id
from shared.settings import Settings
from tests.conftest import TEST_SIGNING_KEY, free_port
from tests.fakes.chain import ALICE
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import eventually
from tests.pipeline.metrics.samples import Samples, delta, parse, scrape, value
from tests.pipeline.stored import stored_scored

ROOT = Path(__file__).resolve().parents[3]


@contextlib.asynccontextmanager
async def worker_with_metrics(
    settings: Settings, staker: FakeStaker
) -> AsyncIterator[tuple[int, Any]]:
    port = free_port()
    async with build_worker(
        settings,
        stake_setup=StakeSetup(staker, None),
        block_ms=50,
        claim_every_s=0.1,
        init_orm=False,
        metrics_port=port,
    ) as worker:
        task = asyncio.create_task(worker.run())
        try:
            yield port, worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)


async def test_a_scrape_counts_entries_outcomes_and_stake_results(
    pipeline_settings: Settings, redis: Redis, orm: str
) -> None:
    settings = pipeline_settings.model_copy(update={"metrics_sample_every_s": 1.0})
    staker = FakeStaker()
    async with worker_with_metrics(settings, staker) as (port, worker):
        status, content_type, text = await scrape(port)
        assert status == 200 and content_type.startswith("text/plain")
        before = parse(text)

        # Three trades that stake (one subnet each: no cooldown between them) ...
        for netuid in (1, 2, 3):
            event = DividendRequested(trade_id=new_id(), netuid=netuid, hotkey=ALICE, source="api")
            await publish(redis, event, maxlen=1000)
        # ... two scored inside the dead band (stored rows, as the sentiment stage leaves them)
        for netuid in (4, 5):
            scored = await stored_scored(new_id(), score=5, netuid=netuid)
            await publish(redis, scored, maxlen=1000)
        # ... and one entry without a signature: refused, dead-lettered.
        await redis.xadd(STREAM_DIVIDEND_REQUESTED, {"type": "dividend_requested", "x": "1"})

        async def settled() -> Samples | None:
            samples = parse((await scrape(port))[2])
            wanted = {
                ("taostake_stake_actions", "succeeded"): 3,
                ("taostake_stake_actions", "skipped"): 2,
            }
            for (name, status), count in wanted.items():
                if value(samples, name, status=status) != count:
                    return None
            pending = value(
                samples,
                "taostake_stream_group_pending",
                stream=STREAM_SENTIMENT_SCORED,
                group="stake",
            )
            stake_done = delta(
                before, samples, "taostake_stage_entries_total", stage="stake", outcome="done"
            )
            return samples if stake_done == 5 and pending == 0 else None

        after = await eventually(settled, timeout=20)

    # Per process: deliveries, outcomes, handler latency, dead letters, outside APIs.
    def grew(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    for stage, done, refused in (("tweets", 3, 1), ("sentiment", 3, 0), ("stake", 5, 0)):
        assert grew("taostake_stage_deliveries_total", stage=stage, via="read") == done + refused
        assert grew("taostake_stage_deliveries_total", stage=stage, via="reclaim") == 0
        assert grew("taostake_stage_entries_total", stage=stage, outcome="done") == done
        assert grew("taostake_stage_entries_total", stage=stage, outcome="failed") == 0
        # The refused entry ran its handler too (it raised Drop).
        assert grew("taostake_stage_handler_duration_seconds_count", stage=stage) == done + refused
        assert grew("taostake_stage_handler_duration_seconds_sum", stage=stage) > 0
        assert value(after, "taostake_stage_in_flight", stage=stage) == 0
    assert grew("taostake_stage_dead_letters_total", stage="tweets", reason="dropped") == 1
    assert grew("taostake_stage_entries_total", stage="tweets", outcome="dead_lettered") == 1
    for service in ("datura", "chutes"):
        assert grew("taostake_external_requests_total", service=service, outcome="ok") == 3
        assert grew("taostake_external_request_duration_seconds_count", service=service) == 3
    info = {"consumer": worker.consumer, "stages": "tweets,sentiment,stake"}
    assert value(after, "taostake_pipeline_info", **info) == 1

    # Global: from Redis and the stake_actions table.
    assert value(after, "taostake_stake_extrinsics", outcome="succeeded") == 3
    assert value(after, "taostake_stake_extrinsics", outcome="failed") == 0
    assert value(after, "taostake_stake_skips", reason="dead_band") == 2
    assert value(after, "taostake_stake_skips", reason="other") == 0
    assert value(after, "taostake_stake_oldest_unsettled_age_seconds") == 0
    assert value(after, "taostake_stream_length", stream=STREAM_STAKE_EXECUTED) == 5
    assert value(after, "taostake_stream_length", stream=STREAM_DEAD_LETTER) == 1
    assert value(after, "taostake_stream_length", stream=STREAM_DIVIDEND_REQUESTED) == 4
    for stream, group in (
        (STREAM_DIVIDEND_REQUESTED, "tweets"),
        (STREAM_TWEETS_FETCHED, "sentiment"),
        (STREAM_SENTIMENT_SCORED, "stake"),
    ):
        labels = {"stream": stream, "group": group}
        assert value(after, "taostake_stream_group_lag", **labels) == 0
        assert value(after, "taostake_stream_group_pending", **labels) == 0
        assert value(after, "taostake_stream_group_oldest_pending_age_seconds", **labels) == 0
        assert value(after, "taostake_stream_group_consumers", **labels) == 1
    last_read = value(after, "taostake_metrics_last_sample_timestamp_seconds", source="database")
    assert last_read > time.time() - 30


async def test_the_endpoint_answers_only_metrics_and_stops_within_its_bound() -> None:
    server = MetricsServer("127.0.0.1", 0)
    await server.start()
    try:
        status, _, text = await scrape(server.port)
        assert status == 200 and "taostake_stage_deliveries_total" in text
        assert (await scrape(server.port, "/nothing"))[0] == 404
        # An idle keep-alive scrape connection does not hold the stop up.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        began = time.monotonic()
    finally:
        assert await server.stop(timeout_s=5)
    assert time.monotonic() - began < 5
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_a_taken_port_leaves_the_pipeline_running_without_an_endpoint(
    redis: Redis, settings: Settings
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines: list[str] = []
        sink = logger.add(lines.append, level="ERROR", format="{message} {extra[port]}")
        try:
            async with serve_metrics(settings, redis, port=port) as server:
                assert server is None
        finally:
            logger.remove(sink)
    assert any("metrics endpoint not started" in line and str(port) in line for line in lines)
    async with serve_metrics(settings, redis, port=0) as server:
        assert server is None  # METRICS_PORT=0: off


async def test_python_m_pipeline_run_serves_its_metrics_and_stops_on_sigterm(
    redis_url: str, clean_db: str, redis: Redis, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "REDIS_"))},
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "DATABASE_URL": clean_db,
        "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
        "METRICS_PORT": str(port),
        "METRICS_SAMPLE_EVERY_S": "1",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--stages", "tweets,sentiment"],
        cwd=tmp_path,  # no .env from the checkout
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def served() -> Samples | None:
            try:
                status, _, text = await scrape(port)
            except aiohttp.ClientError:
                return None
            samples = parse(text) if status == 200 else {}
            # The readers created their groups: the sampler sees them.
            group = {"stream": STREAM_TWEETS_FETCHED, "group": "sentiment"}
            key = ("taostake_stream_group_pending", tuple(sorted(group.items())))
            return samples if samples.get(key) == 0 else None

        samples = await eventually(served, timeout=30)
        [info] = [labels for name, labels in samples if name == "taostake_pipeline_info"]
        assert dict(info)["stages"] == "tweets,sentiment"
        assert value(samples, "taostake_stage_in_flight", stage="tweets") == 0
        assert value(samples, "taostake_stake_actions", status="succeeded") == 0
    except BaseException:
        proc.kill()
        print(proc.communicate(timeout=10)[0].decode()[-3000:])
        raise
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("pipeline did not stop on SIGTERM")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
