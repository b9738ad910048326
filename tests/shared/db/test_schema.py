"""An unmigrated or older database is named as such, with the command that fixes it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from loguru import logger
from redis.asyncio import Redis
from tortoise import Tortoise, connections

from gateway.app import create_app
from pipeline.runner import StakeSetup, build_worker
from shared.db.config import tortoise_config
from shared.db.migrate import migrate_database, migrate_when_reachable
from shared.db.schema import SchemaOutdated, expected_migrations, schema_status
from shared.settings import Settings
from tests.conftest import AUTH, free_port, make_settings, running_app
from tests.fakes.chain import FakeChain


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'db.sqlite3'}"


async def _status_of(url: str) -> tuple[str | None, tuple[str, ...]]:
    await Tortoise.init(config=tortoise_config(Settings(_env_file=None), url))  # type: ignore[call-arg]
    try:
        status = await schema_status()
        return status.problem(), status.missing
    finally:
        await Tortoise.close_connections()


async def test_unmigrated_database_is_named_missing_with_the_fix(tmp_path: Path) -> None:
    problem, missing = await _status_of(_sqlite(tmp_path))
    assert problem is not None
    assert "schema is missing" in problem
    assert "python -m shared.db.migrate" in problem
    assert missing == expected_migrations()


async def test_migrated_database_is_current(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    await migrate_database(Settings(_env_file=None), url)  # type: ignore[call-arg]
    problem, missing = await _status_of(url)
    assert problem is None and missing == ()


async def test_older_schema_names_the_missing_migration(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    await migrate_database(Settings(_env_file=None), url)  # type: ignore[call-arg]
    latest = expected_migrations()[-1]
    await Tortoise.init(config=tortoise_config(Settings(_env_file=None), url))  # type: ignore[call-arg]
    try:
        await connections.get("default").execute_query(
            "DELETE FROM tortoise_migrations WHERE name = ?", [latest]
        )
    finally:
        await Tortoise.close_connections()
    problem, missing = await _status_of(url)
    assert missing == (latest,)
    assert problem is not None and "older than this code" in problem and latest in problem


async def test_pipeline_refuses_to_start_on_an_unmigrated_database(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, _sqlite(tmp_path))
    with pytest.raises(SchemaOutdated, match="schema is missing"):
        async with build_worker(settings, ("tweets",), stake_setup=StakeSetup(None, "none")):
            pass


async def test_readyz_names_the_missing_schema(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, _sqlite(tmp_path))
    async with running_app(create_app(settings, chain=FakeChain())) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        schema = ready.json()["checks"]["schema"]
        assert schema["ok"] is False and schema["error"] == "schema_outdated"
        assert "python -m shared.db.migrate" in schema["detail"]
        assert (await client.get("/healthz")).status_code == 200
        # A route that needs the tables says why, instead of "OperationalError".
        trade = await client.get("/api/v1/trades/abc", headers=AUTH)
        assert trade.status_code == 503
        error = trade.json()["error"]
        assert error["code"] == "schema_outdated"
        assert "python -m shared.db.migrate" in error["message"]
        stored = await client.get(
            "/api/v1/tao_dividends", headers={"Authorization": "Bearer not-a-static-token-xyz"}
        )
        assert stored.status_code == 503
        assert stored.json()["error"]["code"] == "schema_outdated"


async def test_migrate_retries_the_connection_for_a_bounded_time() -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    url = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    started = time.monotonic()
    try:
        with pytest.raises(OSError):
            await migrate_when_reachable(
                Settings(_env_file=None),  # type: ignore[call-arg]
                wait_s=1.0,
                every_s=0.2,
                url=url,
            )
    finally:
        logger.remove(sink)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5
    waits = [line for line in lines if "waiting for the database" in line]
    assert len(waits) >= 2
    assert "127.0.0.1" in waits[0] and "nowhere" in waits[0]


async def test_readyz_reports_a_current_schema(client: httpx.AsyncClient) -> None:
    checks = (await client.get("/readyz")).json()["checks"]
    assert checks["schema"] == {"ok": True, "migrations": len(expected_migrations())}
