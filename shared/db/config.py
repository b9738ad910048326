"""Tortoise configuration: PostgreSQL via asyncpg, SQLite when DATABASE_URL is unset."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from shared.settings import Settings, get_settings

MODELS_MODULE = "shared.db.models"
MIGRATIONS_MODULE = "shared.db.migrations"


def database_url(settings: Settings, url: str | None = None) -> str:
    """The DB URL with the asyncpg pool sized from DB_POOL_SIZE unless the URL says otherwise."""
    url = url or settings.resolved_database_url
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "asyncpg"} and "maxsize" not in parts.query:
        extra = urlencode({"minsize": 1, "maxsize": settings.db_pool_size})
        url = f"{url}{'&' if parts.query else '?'}{extra}"
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
