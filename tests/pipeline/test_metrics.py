"""The pipeline's Prometheus endpoint: per-process counters and histograms, and the global
gauges read from Redis, the stake_actions table and beat's keys. Values are asserted as
deltas of what a scrape of the real endpoint shows (the registry is per process, so other
tests in this process may have counted before)."""

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
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from pipeline.clients.http import ExternalAPIError, RetryPolicy, request_json
from pipeline.metrics import (
    SKIP_REASON_LABELS,
    SKIP_REASONS,
    SNAPSHOT,
    MetricsServer,
    Sampler,
    install_http_metrics,
)
from pipeline.runner import StakeSetup, build_worker, serve_metrics
from pipeline.stages.decision import decide
from shared.bus import publish
from shared.chain.staking_types import NOT_SENT_MESSAGE
from shared.constants import (
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_TWEETS_FETCHED,
)
from shared.db.models import StakeAction, Trade
from shared.events import DividendRequested
from shared.ids import new_id, utcnow
from shared.settings import Settings
from tests.conftest import TEST_SIGNING_KEY, free_port
from tests.fakes import Reply
from tests.fakes.chain import ALICE
from tests.fakes.datura import FakeDatura
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import DATURA_KEY, eventually
from tests.pipeline.stored import stored_scored

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; a missing series fails the test (it is not read as 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a per-process series grew (absent before: from 0)."""
    key = (name, tuple(sorted(labels.items())))
    return value(after, name, **labels) - before.get(key, 0.0)


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


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


async def test_lag_pending_and_the_age_of_the_oldest_pending_entry(redis: Redis) -> None:
    ids = [await redis.xadd(STREAM_SENTIMENT_SCORED, {"n": str(n)}) for n in range(5)]
    await redis.xgroup_create(STREAM_SENTIMENT_SCORED, "stake", id="0")
    await redis.xreadgroup("stake", "c1", {STREAM_SENTIMENT_SCORED: ">"}, count=2)
    await redis.xack(STREAM_SENTIMENT_SCORED, "stake", ids[1])
    await asyncio.sleep(0.3)
    await Sampler(redis).sample_once("streams")
    samples = parse_collector()
    labels = {"stream": STREAM_SENTIMENT_SCORED, "group": "stake"}
    assert value(samples, "taostake_stream_length", stream=STREAM_SENTIMENT_SCORED) == 5
    assert value(samples, "taostake_stream_group_lag", **labels) == 3  # never delivered
    assert value(samples, "taostake_stream_group_pending", **labels) == 1  # delivered, not acked
    age = value(samples, "taostake_stream_group_oldest_pending_age_seconds", **labels)
    assert 0.25 <= age < 10
    # Streams nobody created yet have no groups and length 0.
    assert value(samples, "taostake_stream_length", stream=STREAM_DEAD_LETTER) == 0
    assert not [
        labels
        for name, labels in samples
        if name == "taostake_stream_group_pending" and ("group", "tweets") in labels
    ]


def parse_collector() -> Samples:
    samples: Samples = {}
    for family in SNAPSHOT.collect():
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_stake_gauges_from_the_table(orm: str, redis: Redis, settings: Settings) -> None:
    reasons = {
        "no_score": decide(None, settings).reason,
        "neutral": decide(0, settings).reason,
        "zero_amount": decide(
            1,
            settings.model_copy(update={"stake_sizing": "proportional", "stake_amount_tao": 1e-9}),
        ).reason,
        "dead_band": "score 5 is inside the dead band (|score| < MIN_ABS_SCORE=20)",
        "not_allowlisted": "netuid 7 is not in TRADE_NETUIDS (1, 18)",
        "stale": "stale: the trade is 1200s old at the stake stage (MAX_EVENT_AGE_S=900)",
        "cooldown": "cooldown: another stake action on this (netuid, hotkey) 3s ago (...)",
        "daily_limit": "daily limit: 5 TAO traded by this coldkey in the last 24 h + 1 TAO ...",
        "position_cap": "position cap: 10 TAO staked here + 1 TAO would exceed ...",
        "staking_disabled": "staking disabled (STAKING_ENABLED=false)",
        "insufficient_balance": "insufficient free balance: 0.1 TAO for 1 TAO",
        "nothing_to_unstake": "nothing to unstake on netuid 3",
        "no_price": "no usable price for netuid 3 (read 0 rao): nothing submitted",
        "no_wallet": "no coldkey at ~/.bittensor/wallets/default: nothing submitted",
        "other": "a reason nobody classified yet",
    }
    assert set(reasons) == set(SKIP_REASON_LABELS) and len(SKIP_REASONS) + 1 == len(reasons)
    rows: list[tuple[str, str | None, timedelta]] = [
        ("skipped", reason, timedelta()) for reason in reasons.values()
    ]
    rows += [("skipped", reasons["dead_band"], timedelta())] * 2
    rows += [
        ("succeeded", None, timedelta(minutes=5)),
        ("failed", None, timedelta(minutes=4)),
        ("unknown", None, timedelta(seconds=200)),
        ("submitting", None, timedelta(seconds=90)),
        ("dry_run", None, timedelta()),
    ]
    now = utcnow()
    for netuid, (status, reason, age) in enumerate(rows):
        trade = await Trade.create(trade_id=new_id(), netuid=netuid, hotkey=ALICE, source="api")
        action = await StakeAction.create(
            trade=trade,
            netuid=netuid,
            hotkey=ALICE,
            direction="add",
            status=status,
            reason=reason,
            submitted_at=now - age if status != "skipped" else None,
        )
        await StakeAction.filter(id=action.id).update(created_at=now - age)
    # Signed and stored, never sent (no chain connection at submit): no on-chain failure.
    trade = await Trade.create(trade_id=new_id(), netuid=len(rows), hotkey=ALICE, source="api")
    await StakeAction.create(
        trade=trade,
        netuid=len(rows),
        hotkey=ALICE,
        direction="add",
        status="failed",
        success=False,
        message=NOT_SENT_MESSAGE,
        reason="not sent: chain ws://node is not connected; nothing was submitted (...)",
        submitted_at=now,
    )

    await Sampler(redis).sample_once("database")
    samples = parse_collector()
    for label in SKIP_REASON_LABELS:
        expected = 3 if label == "dead_band" else 1
        assert value(samples, "taostake_stake_skips", reason=label) == expected, label
    assert value(samples, "taostake_stake_actions", status="skipped") == len(reasons) + 2
    assert value(samples, "taostake_stake_actions", status="rejected") == 0
    for outcome in ("succeeded", "failed", "unknown", "submitting"):
        assert value(samples, "taostake_stake_extrinsics", outcome=outcome) == 1, outcome
    assert value(samples, "taostake_stake_actions", status="failed") == 2  # with the unsent
    assert value(samples, "taostake_stake_actions", status="dry_run") == 1
    oldest = value(samples, "taostake_stake_oldest_unsettled_age_seconds")
    assert 195 <= oldest <= 230  # the `unknown` row, submitted 200 s ago


async def test_an_empty_table_reads_as_zeros(orm: str, redis: Redis) -> None:
    await Sampler(redis).sample_once("database")
    samples = parse_collector()
    assert value(samples, "taostake_stake_actions", status="succeeded") == 0
    assert ("taostake_stake_actions", (("status", "succeeded"),)) in samples
    assert ("taostake_stake_oldest_unsettled_age_seconds", ()) in samples


async def test_beat_runs_reach_the_pipeline_through_redis(redis: Redis, settings: Settings) -> None:
    from pipeline.schedule import _count_failure, rescore

    beat_settings = settings.model_copy(
        update={"watchlist": f"3:{ALICE},4:{ALICE}", "rescore_interval_s": 600}
    )
    sampler = Sampler(redis)
    await sampler.sample_once("schedule")
    before = parse_collector()
    assert value(before, "taostake_schedule_runs_total") == 0
    assert ("taostake_schedule_last_run_timestamp_seconds", ()) not in before

    await rescore(redis, beat_settings)
    await rescore(redis, beat_settings)  # both pairs inside their cooldown now
    await _count_failure(redis)
    await sampler.sample_once("schedule")
    after = parse_collector()
    assert value(after, "taostake_schedule_runs_total") == 2
    assert value(after, "taostake_schedule_errors_total") == 1
    assert value(after, "taostake_schedule_last_run_tracked_pairs") == 2
    assert value(after, "taostake_schedule_last_run_enqueued_trades") == 0
    assert value(after, "taostake_schedule_interval_seconds") == 600
    assert 0 <= value(after, "taostake_schedule_last_run_duration_seconds") < 5
    assert abs(value(after, "taostake_schedule_last_run_timestamp_seconds") - time.time()) < 10


async def test_a_failed_source_is_counted_and_its_gauges_dropped(redis: Redis) -> None:
    await Sampler(redis, every_s=1).sample_once("schedule")
    assert ("taostake_schedule_runs_total", ()) in parse_collector()
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        errors_before = _sample_errors("schedule")
        await Sampler(nowhere, every_s=1, timeout_s=2).sample_once("schedule")
        assert _sample_errors("schedule") == errors_before + 1
        assert ("taostake_schedule_runs_total", ()) not in parse_collector()
    finally:
        await nowhere.aclose()


def _sample_errors(source: str) -> float:
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value("taostake_metrics_sample_errors_total", {"source": source})
    return found or 0.0


async def test_outside_api_attempts_and_failures_by_service() -> None:
    from prometheus_client import REGISTRY

    install_http_metrics()

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    names = (
        ("taostake_external_requests_total", {"outcome": "ok"}),
        ("taostake_external_requests_total", {"outcome": "http_5xx"}),
        ("taostake_external_requests_total", {"outcome": "http_4xx"}),
        ("taostake_external_requests_total", {"outcome": "timeout"}),
        ("taostake_external_request_failures_total", {"error": "external_auth_error"}),
        ("taostake_external_request_failures_total", {"error": "external_api_error"}),
        ("taostake_external_request_duration_seconds_count", {}),
    )
    before = [sample(n, service="datura", **labels) for n, labels in names]
    async with FakeDatura(api_key=DATURA_KEY) as datura, aiohttp.ClientSession() as session:

        async def call(timeout_s: float = 2.0, retries: int = 1) -> None:
            await request_json(
                session,
                "GET",
                f"{datura.base_url}/twitter",
                service="datura",
                timeout_s=timeout_s,
                policy=RetryPolicy(max_retries=retries, backoff_base_s=0.01, backoff_max_s=0.01),
                headers={"Authorization": DATURA_KEY},
                params={"query": "Netuid 3", "count": "5"},
            )

        datura.script(Reply(status=503), Reply())
        await call()  # 503, then 200
        datura.script(Reply(status=401, check_auth=False))
        with pytest.raises(ExternalAPIError):
            await call()  # not retried
        datura.script(Reply(delay_s=1.0))
        with pytest.raises(ExternalAPIError):
            await call(timeout_s=0.2, retries=0)  # timed out, retries spent
    after = [sample(n, service="datura", **labels) for n, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 1, 1, 4]


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


async def test_worker_counts_failures_reclaims_outage_waits_and_dead_letters(
    redis: Redis,
) -> None:
    from prometheus_client import REGISTRY

    from pipeline.worker import Retry, Stage, StreamEntry, Unavailable, Worker

    stream, stage = "stream:test_metrics", "metrics_probe"
    tries: dict[str, int] = {}

    async def handler(entry: StreamEntry) -> None:
        kind = entry.fields["kind"]
        tries[kind] = tries.get(kind, 0) + 1
        if kind == "broken":
            raise ValueError("always fails")
        if kind == "flaky" and tries[kind] == 1:
            raise Unavailable("database down")  # retried in place, no delivery spent
        if kind == "later" and tries[kind] == 1:
            raise Retry("not yet", defer_s=0.05)

    def counts() -> dict[str, float]:
        names = {
            "read": ("taostake_stage_deliveries_total", {"via": "read"}),
            "reclaim": ("taostake_stage_deliveries_total", {"via": "reclaim"}),
            "done": ("taostake_stage_entries_total", {"outcome": "done"}),
            "failed": ("taostake_stage_entries_total", {"outcome": "failed"}),
            "retry": ("taostake_stage_entries_total", {"outcome": "retry"}),
            "dead": ("taostake_stage_dead_letters_total", {"reason": "max_deliveries"}),
            "outage": ("taostake_stage_outage_waits_total", {}),
            "timed": ("taostake_stage_handler_duration_seconds_count", {}),
        }
        return {
            key: REGISTRY.get_sample_value(name, {"stage": stage, **labels}) or 0.0
            for key, (name, labels) in names.items()
        }

    before = counts()
    worker = Worker(
        redis,
        [Stage(stage, stream, "probe", handler)],
        block_ms=100,
        claim_idle_ms=60,
        claim_every_s=0.05,
        max_deliveries=2,
        outage_backoff_s=(0.01, 0.01),
    )
    for kind in ("broken", "flaky", "later"):
        await redis.xadd(stream, {"kind": kind})
    task = asyncio.create_task(worker.run())
    try:

        async def finished() -> bool:
            return await redis.xlen(STREAM_DEAD_LETTER) == 1 and tries.get("later") == 2

        await eventually(finished, timeout=10)
        await eventually(lambda: _true(counts()["done"] - before["done"] == 2), timeout=5)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    grew = {key: counts()[key] - before[key] for key in before}
    # broken: read, reclaimed once, dead-lettered at its third delivery without running.
    # later: read, retried, reclaimed once, done. flaky: read, one outage wait, done.
    assert grew == {
        "read": 3,
        "reclaim": 3,
        "done": 2,
        "failed": 2,
        "retry": 1,
        "dead": 1,
        "outage": 1,
        "timed": 5,
    }


async def _true(flag: bool) -> bool:
    return flag


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


async def test_job_runs_are_counted_by_outcome_with_duration_and_last_success(
    redis: Redis,
) -> None:
    from prometheus_client import REGISTRY

    from pipeline.worker import Job, Stage, StreamEntry, Worker

    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("chain down")
        if calls == 3:
            await asyncio.sleep(3600)  # cut at its timeout

    async def handler(entry: StreamEntry) -> None:
        return None

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"job": "metrics_probe_job", **labels}) or 0.0

    before = {
        outcome: sample("taostake_job_runs_total", outcome=outcome)
        for outcome in ("ok", "failed", "timeout")
    }
    durations = sample("taostake_job_duration_seconds_count")
    began = time.time()
    worker = Worker(
        redis,
        [Stage("job_probe", "stream:test_job_metrics", "probe", handler)],
        block_ms=50,
        jobs=[Job("metrics_probe_job", flaky, every_s=0.02, timeout_s=0.2)],
    )

    async def enough() -> bool:
        return calls >= 5

    task = asyncio.create_task(worker.run())
    try:
        await eventually(enough, timeout=5)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    runs = worker.jobs["metrics_probe_job"]["runs"]
    deltas = {
        outcome: sample("taostake_job_runs_total", outcome=outcome) - before[outcome]
        for outcome in ("ok", "failed", "timeout")
    }
    assert deltas["failed"] == 1
    assert deltas["timeout"] == 1
    assert deltas["ok"] == runs - 2
    assert sample("taostake_job_duration_seconds_count") - durations == runs
    assert sample("taostake_job_last_success_timestamp_seconds") >= began
