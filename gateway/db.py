"""One wrapper for the ORM queries of the read routes: a database that cannot answer is a
503 (`database_unavailable`, or `schema_outdated` naming the command to run), never a 500."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from tortoise.exceptions import BaseORMException

from shared.db.schema import database_error

T = TypeVar("T")


async def guarded(query: Awaitable[T]) -> T:
    try:
        return await query
    except (BaseORMException, OSError) as exc:
        raise database_error(exc) from exc
