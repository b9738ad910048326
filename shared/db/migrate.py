"""Apply the schema migrations (Tortoise's own migration tool) to the configured database."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from tortoise import Tortoise
from tortoise.migrations.api.migrate import migrate

from shared.db.config import sqlite_url, tortoise_config
from shared.settings import Settings, get_settings


def ensure_sqlite_dir(connection: str | dict[str, Any]) -> None:
    """Create the directory of a SQLite database file (a `connection_config`)."""
    url = sqlite_url(connection)
    if url is not None and url.startswith("sqlite://") and ":memory:" not in url:
        Path(url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)


async def migrate_database(settings: Settings, url: str | None = None) -> None:
    config = tortoise_config(settings, url)
    ensure_sqlite_dir(config["connections"]["default"])
    try:
        await migrate(config=config)
    finally:
        await Tortoise.close_connections()


async def migrate_when_reachable(
    settings: Settings, *, wait_s: float, every_s: float = 1.0, url: str | None = None
) -> None:
    """Migrate, retrying the connection for up to `wait_s`: in compose the database may
    still be starting (an engine that ignores `service_healthy` starts us first)."""
    target = _describe(url or settings.resolved_database_url)
    deadline = time.monotonic() + wait_s
    attempt = 0
    retryable = _connect_errors()
    while True:
        attempt += 1
        try:
            await migrate_database(settings, url)
            return
        except retryable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            logger.warning(
                "waiting for the database at {} to accept connections "
                "(attempt {}, {}; giving up in {:.0f} s)",
                target,
                attempt,
                type(exc).__name__,
                left,
            )
            await asyncio.sleep(min(every_s * min(attempt, 5), max(left, 0.05)))


def _connect_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "not accepting connections yet" (anything else fails at once)."""
    import asyncpg
    from tortoise.exceptions import DBConnectionError

    errors: tuple[type[BaseException], ...] = (
        TimeoutError,
        OSError,
        DBConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.ConnectionFailureError,
    )
    return errors


def _describe(url: str) -> str:
    """host:port/db of a database URL, never its password."""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return url.split("?", 1)[0]
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def main() -> int:
    settings = get_settings()
    try:
        asyncio.run(migrate_when_reachable(settings, wait_s=settings.db_connect_wait_s))
    except Exception as exc:
        logger.error(
            "migration of {} failed: {}: {}",
            _describe(settings.resolved_database_url),
            type(exc).__name__,
            exc,
        )
        return 1
    backend = "sqlite" if settings.resolved_database_url.startswith("sqlite") else "postgres"
    logger.info("database migrated", backend=backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
