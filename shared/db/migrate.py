"""Apply the schema migrations (Tortoise's own migration tool) to the configured database."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from loguru import logger
from tortoise import Tortoise
from tortoise.migrations.api.migrate import migrate

from shared.db.config import tortoise_config
from shared.settings import Settings, get_settings


def ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite://") and ":memory:" not in url:
        Path(url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)


async def migrate_database(settings: Settings, url: str | None = None) -> None:
    config = tortoise_config(settings, url)
    ensure_sqlite_dir(config["connections"]["default"])
    try:
        await migrate(config=config)
    finally:
        await Tortoise.close_connections()


def main() -> int:
    settings = get_settings()
    asyncio.run(migrate_database(settings))
    backend = "sqlite" if settings.resolved_database_url.startswith("sqlite") else "postgres"
    logger.info("database migrated", backend=backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
