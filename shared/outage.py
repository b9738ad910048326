"""Is this error an outage of a dependency (worth waiting out) or a fault of the work itself?

A stage that cannot reach PostgreSQL, Redis, the chain or an outside API must wait and try
again without spending the entry's deliveries: otherwise an outage longer than
MAX_DELIVERIES × the claim idle time sends every trade in flight to the dead letters. Only
errors that say "could not reach / no answer" count; anything else (a bad row, a constraint,
a schema error) fails the delivery as usual.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tortoise.exceptions import DBConnectionError

from shared.errors import AppError, ChainTimeout, ChainUnavailable, DependencyUnavailable

_MAX_DEPTH = 6


def _asyncpg_outages() -> tuple[type[BaseException], ...]:
    import asyncpg

    errors: tuple[type[BaseException], ...] = (
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.InterfaceError,
        asyncpg.AdminShutdownError,
    )
    return errors


_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused / reset / aborted (OSError subclasses)
    RedisConnectionError,
    RedisTimeoutError,
    DBConnectionError,
    DependencyUnavailable,
    ChainUnavailable,
    ChainTimeout,
    *_asyncpg_outages(),
)


def outage_reason(exc: BaseException) -> str | None:
    """A short reason when `exc` (or what caused it) is a dependency being unreachable."""
    seen: set[int] = set()
    current: BaseException | None = exc
    depth = 0
    while current is not None and depth < _MAX_DEPTH and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, asyncio.CancelledError):
            return None
        if isinstance(current, _OUTAGES) or _retryable_app_error(current):
            return f"{type(current).__name__}: {current}"[:300]
        current = current.__cause__ or current.__context__
        depth += 1
    return None


def _retryable_app_error(exc: BaseException) -> bool:
    """Outside-API errors mark themselves retryable (5xx, 429, timeouts after retries)."""
    return isinstance(exc, AppError) and getattr(exc, "retryable", False) is True
