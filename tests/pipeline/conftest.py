"""Pipeline fixtures: the ORM on the test database, fake Datura/Chutes servers, a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from tortoise import Tortoise

from pipeline.runner import StakeSetup, build_worker
from pipeline.worker import Worker
from shared.chain.staking_types import StakeClient
from shared.db.config import tortoise_config
from shared.settings import Settings
from tests.conftest import make_settings
from tests.fakes.chutes import FakeChutes
from tests.fakes.datura import FakeDatura
from tests.fakes.staker import FakeStaker

DATURA_KEY = "dt_test_key_for_fake_server_0001"
CHUTES_KEY = "cpk_test_key_for_fake_server_0002"


@pytest.fixture
async def orm(clean_db: str) -> AsyncIterator[str]:
    await Tortoise.init(config=tortoise_config(Settings(_env_file=None), clean_db))  # type: ignore[call-arg]
    yield clean_db
    await Tortoise.close_connections()


@pytest.fixture
async def datura() -> AsyncIterator[FakeDatura]:
    async with FakeDatura(api_key=DATURA_KEY) as server:
        yield server


@pytest.fixture
async def chutes() -> AsyncIterator[FakeChutes]:
    async with FakeChutes(api_key=CHUTES_KEY, content='{"score": 60, "reason": "upbeat"}') as s:
        yield s


@pytest.fixture
def staker() -> FakeStaker:
    return FakeStaker()


@pytest.fixture
def pipeline_settings(
    redis_url: str, clean_db: str, redis: Redis, datura: FakeDatura, chutes: FakeChutes
) -> Settings:
    return make_settings(
        redis_url,
        clean_db,
        datura_api_key=DATURA_KEY,
        datura_base_url=datura.base_url,
        chutes_api_key=CHUTES_KEY,
        chutes_base_url=chutes.base_url,
        http_max_retries=1,
        datura_timeout_s=2,
        chutes_timeout_s=2,
        worker_claim_idle_s=0.5,
        worker_handler_timeout_s=5.0,
        max_deliveries=3,
        tweet_cache_ttl_s=0,
        stake_submit_timeout_s=0.3,
        stake_settle_margin_s=0.1,
        stake_reconcile_every_s=0.1,
    )


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    staker: StakeClient | None,
    *,
    stages: tuple[str, ...] = ("tweets", "sentiment", "stake"),
    consumer: str | None = None,
    init_orm: bool = False,
    problem: str | None = None,
) -> AsyncIterator[Worker]:
    setup = StakeSetup(staker, problem if staker is None else None)
    async with build_worker(
        settings,
        stages,
        stake_setup=setup,
        consumer=consumer,
        block_ms=50,
        claim_every_s=0.1,
        init_orm=init_orm,
    ) as worker:
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 8.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)
