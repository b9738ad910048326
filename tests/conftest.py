"""Shared fixtures: real Redis and PostgreSQL, the real app over ASGI with a fake chain.

Servers come from TEST_REDIS_URL / TEST_DATABASE_URL (make test starts local ones
when they are missing); when those cannot be reached and a Docker engine exists,
testcontainers starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from gateway.app import create_app
from scripts.services import docker_ok, postgres_ok, redis_ok
from shared.db.config import tortoise_config
from shared.db.migrate import migrate_database
from shared.settings import Settings
from shared.signing import set_signing_key
from tests.fakes.chain import FakeChain

TOKENS = ["test-token-alpha-123", "test-token-beta-456"]
# The key every test process signs and verifies stream entries with (see make_settings).
TEST_SIGNING_KEY = "test-event-signing-key-0123456789abcdef"
TABLES = ["stake_actions", "sentiment_scores", "tweet_batches", "trades", "api_tokens"]


@pytest.fixture(autouse=True)
def _fresh_executor_cache() -> Iterator[None]:
    """Tortoise caches each model's INSERT per connection *name*, not per dialect: after a
    test on SQLite, a PostgreSQL test in the same run would reuse SQLite's statements."""
    EXECUTOR_CACHE.clear()
    yield
    EXECUTOR_CACHE.clear()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if redis_ok(url):
        yield url
        return
    if not docker_ok():
        pytest.exit(f"Redis not reachable at {url} and no Docker engine; run `make test`", 3)
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as container:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    if not asyncio.run(postgres_ok(url)):
        if not docker_ok():
            pytest.exit(f"PostgreSQL not reachable at {url} and no Docker engine", 3)
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine") as pg:
            url = pg.get_connection_url().replace("postgresql+psycopg2", "postgres")
            asyncio.run(_reset_schema(url))
            yield url
        return
    asyncio.run(_reset_schema(url))
    yield url


async def _reset_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    await migrate_database(Settings(_env_file=None), url)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def _event_signing_key() -> None:
    """Tests publish before any app or worker has configured the key (and a test may
    configure another): every test starts with the shared test key."""
    set_signing_key(TEST_SIGNING_KEY)


@pytest.fixture
async def clean_db(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    finally:
        await conn.close()
    return database_url


@pytest.fixture(params=["sqlite", "postgres"])
async def either_db(
    request: pytest.FixtureRequest, tmp_path: Path, clean_db: str
) -> AsyncIterator[str]:
    """Tortoise on a fresh SQLite file, then on the test PostgreSQL: the dialect's name."""
    url = clean_db
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'either.sqlite3'}"
        await migrate_database(Settings(_env_file=None), url)  # type: ignore[call-arg]
    await Tortoise.init(config=tortoise_config(Settings(_env_file=None), url))  # type: ignore[call-arg]
    yield request.param
    await Tortoise.close_connections()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


def make_settings(redis_url: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "api_tokens": SecretStr(",".join(TOKENS)),
        "chain_timeout_s": 1.0,
        "rate_limit_per_min": 100_000,
        "trade_rate_limit_per_min": 100_000,
        "rate_limit_sync_s": 0.05,
        "log_level": "WARNING",
        "metrics_port": 0,  # tests that want the endpoint pick a free port
        "event_signing_key": SecretStr(TEST_SIGNING_KEY),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(redis_url: str, clean_db: str, redis: Redis) -> Settings:
    return make_settings(redis_url, clean_db)


@pytest.fixture
def chain() -> FakeChain:
    return FakeChain()


@contextlib.asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The real ASGI app, lifespan included, behind an httpx client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def client(settings: Settings, chain: FakeChain) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(settings, chain=chain)) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own on a free port (so stopping it harms no one)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server binary not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 5
    while not redis_ok(url):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("private redis-server did not start")
        time.sleep(0.05)
    try:
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


def capture_json_records(settings: Settings) -> list[dict[str, Any]]:
    """Logging set up again (as a process does it: stdlib routed through loguru) as
    LOG_FORMAT=json at DEBUG into a list, each line parsed, its logger as `name`: loguru's
    lines and the gateway's access line (which is not written by loguru) alike. Call it after
    create_app, which sets logging up from its settings."""
    from shared.logging import configure_logging

    records: list[dict[str, Any]] = []

    def sink(line: str) -> None:
        record = orjson.loads(str(line))
        record["name"] = record.pop("logger")
        records.append(record)

    json_debug = settings.model_copy(update={"log_format": "json", "log_level": "DEBUG"})
    configure_logging(json_debug, sink=sink)
    return records


def run_python(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`script` run by this Python in a fresh process from the project's root (PYTHONPATH set
    to it), its output captured as text."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
