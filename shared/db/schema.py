"""Is the database's schema the one this code expects?

A process started against a database that was never migrated, or migrated by an older
release, would otherwise fail on its first query with "no such table" or a missing column.
This names the problem and the command that fixes it instead.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from importlib import import_module

from tortoise import connections

from shared.db.config import MIGRATIONS_MODULE
from shared.errors import AppError, DatabaseUnavailable

APP_LABEL = "models"
MIGRATIONS_TABLE = "tortoise_migrations"
FIX_COMMAND = "python -m shared.db.migrate (make migrate; in compose: the migrate service)"


class SchemaOutdated(AppError):
    """The database lacks migrations this code needs."""

    code = "schema_outdated"


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    expected: tuple[str, ...]
    applied: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        applied = set(self.applied)
        return tuple(name for name in self.expected if name not in applied)

    @property
    def current(self) -> bool:
        return not self.missing

    def problem(self) -> str | None:
        """What is wrong, with the fix; None when the schema is current."""
        if self.current:
            return None
        if not self.applied:
            what = "the database schema is missing (never migrated)"
        else:
            what = (
                f"the database schema is older than this code (missing migrations: "
                f"{', '.join(self.missing)})"
            )
        return f"{what}; apply it with: {FIX_COMMAND}"


def expected_migrations() -> tuple[str, ...]:
    module = import_module(MIGRATIONS_MODULE)
    names = [
        name
        for _, name, is_pkg in pkgutil.iter_modules(module.__path__)
        if not is_pkg and name[0] not in "_~"
    ]
    return tuple(sorted(names))


async def schema_status(connection_name: str = "default") -> SchemaStatus:
    """Applied vs expected migrations; a missing migrations table reads as none applied.

    Raises the driver's error when the database cannot be reached at all.
    """
    connection = connections.get(connection_name)
    try:
        _, rows = await connection.execute_query(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE app = '{APP_LABEL}'"  # noqa: S608
        )
    except Exception as exc:
        if _is_missing_table(exc):
            rows = []
        else:
            raise
    applied = tuple(sorted(str(row["name"]) for row in rows))
    return SchemaStatus(expected=expected_migrations(), applied=applied)


async def require_current_schema(connection_name: str = "default") -> None:
    """Raise `SchemaOutdated` (with the fix) unless every migration is applied."""
    problem = (await schema_status(connection_name)).problem()
    if problem is not None:
        raise SchemaOutdated(problem)


def _is_missing_table(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return "no such table" in text or "does not exist" in text or "undefinedtable" in text


def _is_missing_schema(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return _is_missing_table(exc) or "no such column" in text or "undefinedcolumn" in text


def database_error(exc: BaseException) -> AppError:
    """What a failed query means to a caller: a schema to apply, or an unavailable database."""
    if _is_missing_schema(exc):
        return SchemaOutdated(
            f"the database schema is missing or older than this code; apply it with: {FIX_COMMAND}"
        )
    return DatabaseUnavailable(f"database unavailable: {type(exc).__name__}")
