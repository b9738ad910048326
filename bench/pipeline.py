"""Pipeline benchmark: trades/s through the tweets and sentiment stages with instant local
fakes of Datura and Chutes, and hop latency, beside a raw redis-py XADD/XREADGROUP relay
measured in the same run.

    .venv/bin/python -m bench.pipeline [--trades 3000] [--workers 2] [--batch 32]
                                       [--paced 200] [--gaps-ms 20]
    (as a module: bench/pipeline.py would shadow the pipeline package if run as a script)

The trades are written to `stream:dividend_requested` before the clock starts (writing them
is the gateway's cost, not the stages'); `--workers` pipeline processes, each running both
stages as `python -m pipeline run` does, then take them through; the rate is trades over
the time until the last `sentiment_scored` entry is there. Hop latency is measured after,
from the events' `occurred_at` stamps (ms resolution), over trades sent one at a time with a
gap between them (`--gaps-ms`, 20 by default: every process goes idle between trades, and
waking up costs; on this machine the first statement after 20 ms idle takes about twice as
long as one right after another). Two anchors are measured with the same gaps: the raw
relay's hop (XADD, XREADGROUP), and a bare durable hop (XADD, XREADGROUP and one INSERT
committed: the I/O that a stage which stores before it publishes cannot do without).

Uses Redis at BENCH_REDIS_URL (default DB 14, flushed) and PostgreSQL at
BENCH_DATABASE_URL (default database taostake_bench, created and migrated).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import uvloop
from loguru import logger
from redis.asyncio import Redis

from pipeline.runner import StakeSetup, build_worker
from shared.constants import (
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_TWEETS_FETCHED,
)
from shared.db.migrate import migrate_database
from shared.events import DividendRequested
from shared.heap import freeze_startup_heap
from shared.ids import new_id
from shared.settings import Settings
from shared.signing import set_signing_key
from tests.fakes.chain import ALICE
from tests.fakes.chutes import FakeChutes
from tests.fakes.datura import FakeDatura

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SIGNING_KEY = "bench-event-signing-key-0123456789"
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/taostake_bench")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def raw_relay(redis: Redis, n: int) -> tuple[float, list[float]]:
    """Anchor: XADD → XREADGROUP → XADD next stream → XACK, the bare cost of a hop."""
    await redis.xgroup_create("bench:a", "g", id="0", mkstream=True)
    hops: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        handled = 0
        while handled < n:
            reply = await redis.xreadgroup("g", "c", {"bench:a": ">"}, count=100, block=1000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    hops.append((time.perf_counter() - float(fields[b"t"])) * 1000)
                    await redis.xadd("bench:b", {"t": fields[b"t"]})
                    await redis.xack("bench:a", "g", entry_id)
                    handled += 1
        done.set()

    consumer = asyncio.create_task(consume())
    start = time.perf_counter()
    for _ in range(n):
        await redis.xadd("bench:a", {"t": repr(time.perf_counter())})
    await done.wait()
    elapsed = time.perf_counter() - start
    await consumer
    return n / elapsed, hops


async def raw_paced(redis: Redis, n: int, gap_s: float, *, durable: bool = False) -> list[float]:
    """Anchor hop latency, one entry at a time, `gap_s` apart: XADD → XREADGROUP and, with
    `durable`, one single-row INSERT committed before the hop ends (a prepared statement on a
    connection of its own): the bare I/O of a stage that stores before it publishes, without
    the stage's work (signatures, parsing, its outside call, its record's columns)."""
    stream = "bench:d" if durable else "bench:p"
    conn = await asyncpg.connect(DB_URL) if durable else None
    try:
        insert = None
        if conn is not None:
            await conn.execute("CREATE TABLE bench_hop (id text PRIMARY KEY, at timestamptz)")
            insert = await conn.prepare("INSERT INTO bench_hop VALUES ($1, now())")
        await redis.delete(stream)
        await redis.xgroup_create(stream, "g", id="0", mkstream=True)
        hops = []
        for i in range(n):
            sent = time.perf_counter()
            await redis.xadd(stream, {"t": "1"})
            reply = await redis.xreadgroup("g", "c", {stream: ">"}, count=1, block=1000)
            if insert is not None:
                await insert.fetch(str(i))
            hops.append((time.perf_counter() - sent) * 1000)
            await redis.xack(stream, "g", reply[0][1][0][0])
            await asyncio.sleep(gap_s)
        return hops
    finally:
        if conn is not None:
            await conn.execute("DROP TABLE IF EXISTS bench_hop")
            await conn.close()


async def prepare_db() -> None:
    parts = urlsplit(DB_URL)
    admin = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    name = parts.path.lstrip("/")
    if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name):
        await admin.execute(f'DROP DATABASE "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    await migrate_database(Settings(_env_file=None), DB_URL)  # type: ignore[call-arg]


def _serve_fakes(port_queue: Any) -> None:
    """Datura and Chutes fakes in a process of their own (in production they are remote)."""

    async def serve() -> None:
        async with (
            FakeDatura(api_key="bench-datura") as datura,
            FakeChutes(api_key="bench-chutes", content='{"score": 42}') as chutes,
        ):
            port_queue.put((datura.base_url, chutes.base_url))
            await asyncio.Event().wait()

    uvloop.run(serve())


def _bench_settings(datura_url: str, chutes_url: str, batch: int = 32) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=REDIS_URL,
        database_url=DB_URL,
        datura_api_key="bench-datura",
        datura_base_url=datura_url,
        chutes_api_key="bench-chutes",
        chutes_base_url=chutes_url,
        event_signing_key=SIGNING_KEY,
        log_level="WARNING",
        worker_concurrency=256,
        worker_batch=batch,
        db_pool_size=20,
    )


def _run_worker(urls: tuple[str, str], batch: int, ready: Any, go: Any) -> None:
    """One pipeline process (as `python -m pipeline run --stages tweets,sentiment`): built,
    then held until `go`, so start-up is not timed; stopped by SIGTERM (drains)."""
    logger.remove()

    async def run() -> None:
        settings = _bench_settings(*urls, batch=batch)
        async with build_worker(
            settings,
            ("tweets", "sentiment"),
            block_ms=200,
            stake_setup=StakeSetup(None, "bench"),
            metrics_port=0,
        ) as worker:
            worker.install_signal_handlers()
            freeze_startup_heap()
            ready.set()
            await asyncio.to_thread(go.wait)
            await worker.run()

    uvloop.run(run())


async def _fill(redis: Redis, n: int, subnets: int) -> None:
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        event = DividendRequested(
            trade_id=new_id(), netuid=i % subnets, hotkey=ALICE, source="manual"
        )
        pipe.xadd(STREAM_DIVIDEND_REQUESTED, event.to_fields())  # type: ignore[arg-type]
        if len(pipe) >= 500:
            await pipe.execute()
    await pipe.execute()


async def _wait_for(redis: Redis, n: int) -> None:
    while await redis.xlen(STREAM_SENTIMENT_SCORED) < n:
        await asyncio.sleep(0.005)


async def product(
    n: int, subnets: int, paced: int, gaps_s: list[float], workers: int, batch: int
) -> tuple[float, dict[float, tuple[list[float], list[float]]]]:
    """Throughput of `workers` pipeline processes over a backlog of `n` trades (written before
    the clock starts: the gateway's cost is not the stages'), then hop latency over `paced`
    trades sent one at a time `gap` apart, for each gap (latency under a burst is queueing
    time, not the cost of a hop)."""
    ports: Any = multiprocessing.Queue()
    fakes = multiprocessing.Process(target=_serve_fakes, args=(ports,), daemon=True)
    fakes.start()
    urls = await asyncio.to_thread(ports.get, True, 30)
    procs: list[Any] = []
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, not a forked event loop
    go = spawn.Event()
    try:
        redis = Redis.from_url(REDIS_URL)
        for _ in range(workers):
            ready = spawn.Event()
            proc = spawn.Process(target=_run_worker, args=(urls, batch, ready, go))
            proc.start()
            procs.append(proc)
            await asyncio.to_thread(ready.wait, 60)
        await _fill(redis, n, subnets)
        start = time.perf_counter()
        go.set()
        await _wait_for(redis, n)
        elapsed = time.perf_counter() - start
        hops = {}
        for gap in gaps_s:
            for stream in (
                STREAM_DIVIDEND_REQUESTED,
                STREAM_TWEETS_FETCHED,
                STREAM_SENTIMENT_SCORED,
            ):
                await redis.xtrim(stream, maxlen=0)
            for i in range(paced):
                event = DividendRequested(
                    trade_id=new_id(), netuid=i % subnets, hotkey=ALICE, source="manual"
                )
                await redis.xadd(STREAM_DIVIDEND_REQUESTED, event.to_fields())  # type: ignore[arg-type]
                await asyncio.sleep(gap)
            await _wait_for(redis, paced)
            hops[gap] = await hop_latencies(redis)
        await redis.aclose()
        return n / elapsed, hops
    finally:
        go.set()
        for proc in procs:
            proc.terminate()  # SIGTERM: the worker drains and exits
        for proc in procs:
            proc.join(30)
        fakes.terminate()


async def hop_latencies(redis: Redis) -> tuple[list[float], list[float]]:
    """ms between a trade's events (occurred_at stamps, ms resolution)."""
    stamps: dict[str, list[datetime]] = {}
    for stream in (STREAM_DIVIDEND_REQUESTED, STREAM_TWEETS_FETCHED, STREAM_SENTIMENT_SCORED):
        for _, fields in await redis.xrange(stream):
            at = datetime.fromisoformat(fields[b"occurred_at"].decode().replace("Z", "+00:00"))
            stamps.setdefault(fields[b"trade_id"].decode(), []).append(at)
    hop1 = [(s[1] - s[0]).total_seconds() * 1000 for s in stamps.values() if len(s) == 3]
    hop2 = [(s[2] - s[1]).total_seconds() * 1000 for s in stamps.values() if len(s) == 3]
    return hop1, hop2


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=3000)
    parser.add_argument("--subnets", type=int, default=64)
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument(
        "--gaps-ms",
        default="20",
        help="ms between the paced trades, one hop measurement per gap (comma-separated)",
    )
    parser.add_argument("--workers", type=int, default=2, help="pipeline processes")
    parser.add_argument("--batch", type=int, default=32, help="WORKER_BATCH")
    args = parser.parse_args()
    logger.remove()
    set_signing_key(SIGNING_KEY)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    raw_rate, _ = await raw_relay(redis, args.trades)
    await redis.flushdb()
    gaps = [float(g) / 1000 for g in args.gaps_ms.split(",")]
    raw_hops = {gap: await raw_paced(redis, args.paced, gap) for gap in gaps}
    await redis.flushdb()
    await prepare_db()
    durable_hops = {gap: await raw_paced(redis, args.paced, gap, durable=True) for gap in gaps}
    await redis.flushdb()
    await redis.aclose()
    rate, hops = await product(
        args.trades, args.subnets, args.paced, gaps, args.workers, args.batch
    )
    print(
        f"\nmachine: {os.cpu_count()} cores; {args.trades} trades over {args.subnets} subnets; "
        f"{args.workers} pipeline processes, WORKER_BATCH={args.batch}; "
        "PostgreSQL + Redis on loopback; Datura/Chutes fakes answer instantly "
        "from another process\n"
    )
    print(f"| {'measure':84} | {'value':>20} |")
    print(f"|{'-' * 86}|{'-' * 22}|")
    print(f"| {'anchor: raw XADD/XREADGROUP relay, entries/s':84} | {raw_rate:20.0f} |")
    print(f"| {'pipeline: trades/s through tweets+sentiment':84} | {rate:20.0f} |")
    print(f"| {'pipeline: ratio to the raw relay':84} | {rate / raw_rate:20.2f} |")
    for gap in gaps:
        each = f"one trade every {gap * 1000:g} ms"
        for label, anchor in (
            ("anchor: raw hop", raw_hops[gap]),
            ("anchor: bare durable hop (+ one INSERT)", durable_hops[gap]),
        ):
            spread = (
                f"{pct(anchor, 0.5):.2f} / {statistics.mean(anchor):.2f} / {pct(anchor, 0.99):.1f}"
            )
            print(f"| {label + ' p50 / mean / p99 (ms), ' + each:84} | {spread:>20} |")
        floor = statistics.mean(durable_hops[gap])
        for name, values in zip(("requested→tweets", "tweets→sentiment"), hops[gap], strict=True):
            spread = (
                f"{statistics.median(values):.1f} / {statistics.mean(values):.2f} / "
                f"{pct(values, 0.99):.1f}"
            )
            print(f"| {'hop ' + name + ' p50 / mean / p99 (ms), ' + each:84} | {spread:>20} |")
            print(
                f"| {'hop ' + name + ' mean / bare durable hop mean':84} | "
                f"{statistics.mean(values) / floor:20.2f} |"
            )
    print(
        "\n(hop times are differences of the events' occurred_at stamps, which have ms "
        "resolution: the p50 is a whole number of ms, the mean is not)"
    )
    print("\n(goal from the issue: ≥ 1000 trades/s and hop p50 ≤ 2 ms on this machine)")


if __name__ == "__main__":
    uvloop.run(main())  # as `python -m pipeline run` does
