"""Redis client factory: hiredis parser, a blocking pool sized for bursts."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from shared.settings import Settings


def create_redis(settings: Settings, *, url: str | None = None) -> Redis:
    """A client whose pool makes callers wait (bounded) instead of failing under a burst.

    `socket_timeout` stays longer than any stream `BLOCK` used by the workers,
    otherwise redis-py retries a blocking read and then raises.
    """
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url or settings.redis_url,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_pool_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=min(settings.redis_socket_timeout_s, 5.0),
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)
