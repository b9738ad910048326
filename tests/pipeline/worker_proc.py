"""A worker process for the subprocess tests of pipeline/worker.py (SIGKILL, SIGTERM).

Its handler records each start in `{prefix}:started` (a list of
"consumer|entry_id"), sleeps, then counts the completion in `{prefix}:completed`
(a hash entry_id -> count), so a test can tell from Redis alone what ran where
and how many times.

    python -m tests.pipeline.worker_proc REDIS_URL STREAM GROUP CONSUMER PREFIX \
        --sleep 30 --claim-idle-ms 500 --grace 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from loguru import logger
from redis.asyncio import Redis

from pipeline.worker import Stage, StreamEntry, Worker


async def main(args: argparse.Namespace) -> int:
    redis = Redis.from_url(args.redis_url)

    async def handler(entry: StreamEntry) -> None:
        await redis.rpush(f"{args.prefix}:started", f"{args.consumer}|{entry.entry_id}")
        await asyncio.sleep(args.sleep)
        await redis.hincrby(f"{args.prefix}:completed", entry.entry_id, 1)

    worker = Worker(
        redis,
        [Stage("proc", args.stream, args.group, handler)],
        consumer=args.consumer,
        block_ms=100,
        claim_idle_ms=args.claim_idle_ms,
        claim_every_s=0.1,
        shutdown_grace_s=args.grace,
        health_ttl_s=5,
    )
    worker.install_signal_handlers()
    try:
        await worker.run()
    finally:
        await redis.aclose()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("redis_url", "stream", "group", "consumer", "prefix"):
        parser.add_argument(name)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--claim-idle-ms", type=int, default=500)
    parser.add_argument("--grace", type=float, default=5.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
