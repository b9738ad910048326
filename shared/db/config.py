"""Tortoise configuration: PostgreSQL via asyncpg, SQLite when DATABASE_URL is unset."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

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


def tortoise_config(settings: Settings, url: str | None = None) -> dict[str, Any]:
    return {
        "connections": {"default": database_url(settings, url)},
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
