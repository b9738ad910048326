"""What the batch-stage worker tests share: a Worker with one batch stage on a test stream,
run for the length of a block, and a wait for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis

from pipeline.entries import BatchHandler, Stage
from pipeline.worker import Worker

GROUP = "testers"
FAST: dict[str, Any] = {"block_ms": 100, "claim_every_s": 0.05}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def batch_worker(redis: Redis, stream: str, handler: BatchHandler, **options: Any) -> Worker:
    return Worker(redis, [Stage("batch", stream, GROUP, batch=handler)], **{**FAST, **options})


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


async def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)
