"""Tortoise configuration: PostgreSQL via asyncpg, SQLite when DATABASE_URL is unset."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from tortoise.backends.base.config_generator import expand_db_url

from shared.settings import Settings, get_settings

MODELS_MODULE = "shared.db.models"
MIGRATIONS_MODULE = "shared.db.migrations"


def database_url(settings: Settings, url: str | None = None) -> str:
    """The DB URL with the asyncpg pool sized from DB_POOL_SIZE and every statement bounded by
    DB_COMMAND_TIMEOUT_S, unless the URL says otherwise."""
    url = url or settings.resolved_database_url
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "asyncpg"}:
        params: dict[str, object] = {}
        if "maxsize" not in parts.query:
            params.update(minsize=1, maxsize=settings.db_pool_size)
        if "command_timeout" not in parts.query:
            # A stalled database must fail the request (503), not hang it.
            params["command_timeout"] = settings.db_command_timeout_s
        if params:
            url = f"{url}{'&' if parts.query else '?'}{urlencode(params)}"
    return url


async def keep_session(connection: Any) -> None:
    """What a PostgreSQL connection needs before it goes back to the pool: only an open
    transaction rolled back. asyncpg's default also runs `pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` (one more round trip after every query); these services take no
    advisory locks, keep no cursors, LISTEN to nothing and change no session setting."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def connection_config(settings: Settings, url: str | None = None) -> str | dict[str, Any]:
    """The default connection: SQLite as a URL, PostgreSQL as asyncpg credentials (the pool
    sized and bounded as `database_url` says, released connections kept by `keep_session`)."""
    resolved = database_url(settings, url)
    if urlsplit(resolved).scheme not in {"postgres", "postgresql", "asyncpg"}:
        return resolved
    config = expand_db_url(resolved)
    config["credentials"]["reset"] = keep_session
    return config


def sqlite_url(connection: str | dict[str, Any]) -> str | None:
    """The SQLite URL of a `connection_config`, None for PostgreSQL."""
    return connection if isinstance(connection, str) and connection.startswith("sqlite") else None


def tortoise_config(settings: Settings, url: str | None = None) -> dict[str, Any]:
    return {
        "connections": {"default": connection_config(settings, url)},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _cli_config() -> dict[str, Any]:
    return tortoise_config(get_settings())


# Read by `tortoise makemigrations / migrate` through pyproject's [tool.tortoise].
TORTOISE_ORM = _cli_config()
