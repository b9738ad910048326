from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from shared.db.config import database_url, tortoise_config
from tests.conftest import make_settings


def test_postgres_url_gets_pool_size_and_statement_timeout() -> None:
    settings = make_settings(
        "redis://x", "postgres://u@h:5432/db", db_pool_size=50, db_command_timeout_s=3
    )
    query = parse_qs(urlsplit(database_url(settings)).query)
    assert query == {"minsize": ["1"], "maxsize": ["50"], "command_timeout": ["3.0"]}


def test_explicit_url_parameters_win_and_sqlite_is_untouched() -> None:
    settings = make_settings("redis://x", "postgres://u@h/db?maxsize=7&command_timeout=1")
    query = parse_qs(urlsplit(database_url(settings)).query)
    assert query == {"maxsize": ["7"], "command_timeout": ["1"]}
    sqlite = make_settings("redis://x", "")
    assert database_url(sqlite) == "sqlite://data/taostake.sqlite3"
    assert tortoise_config(sqlite)["apps"]["models"]["migrations"] == "shared.db.migrations"
