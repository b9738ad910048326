"""App factory and lifespan: one Redis pool, one chain client and one ORM per process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from loguru import logger
from tortoise.contrib.fastapi import RegisterTortoise

from gateway import errors, health
from gateway.auth import Authenticator
from gateway.dividends.router import router as dividends_router
from gateway.dividends.service import DividendsService, TradeService
from gateway.middleware import RequestContextMiddleware
from gateway.ratelimit import RateLimiter
from gateway.state import AppState
from gateway.trades.router import router as trades_router
from shared.cache import TwoLevelCache
from shared.chain import ChainClient, SubtensorChain
from shared.constants import KEY_DIVIDENDS_CACHE
from shared.db.config import tortoise_config
from shared.db.migrate import ensure_sqlite_dir
from shared.logging import configure_logging
from shared.redis import create_redis
from shared.settings import Settings, get_settings
from shared.trades import TradeTrigger

DESCRIPTION = """
Tao dividends of Bittensor hotkeys, from a two-level cache or the chain, and a
sentiment-driven stake trade enqueued on request.

Authenticate with `Authorization: Bearer <token>` (tokens from `API_TOKENS` or
`python -m gateway tokens create NAME`).
"""


def create_app(settings: Settings | None = None, *, chain: ChainClient | None = None) -> FastAPI:
    """Build the app. Pass `chain` to use a client other than `SubtensorChain` (tests)."""
    settings = settings or get_settings()
    configure_logging(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(settings)
        owned_chain: SubtensorChain | None = None
        chain_client: ChainClient
        if chain is None:
            owned_chain = SubtensorChain(settings)
            chain_client = owned_chain
        else:
            chain_client = chain
        orm_config = tortoise_config(settings)
        ensure_sqlite_dir(orm_config["connections"]["default"])
        limiter = RateLimiter(redis, sync_s=settings.rate_limit_sync_s)
        cache = TwoLevelCache(
            redis,
            prefix=KEY_DIVIDENDS_CACHE,
            ttl_s=settings.cache_ttl_s,
            max_local=settings.cache_l1_max_entries,
        )
        app.state.services = AppState(
            settings=settings,
            redis=redis,
            chain=chain_client,
            auth=Authenticator(settings.static_tokens(), cache_ttl_s=settings.auth_cache_ttl_s),
            limiter=limiter,
            dividends=DividendsService(chain_client, cache, timeout_s=settings.chain_timeout_s),
            trades=TradeService(
                TradeTrigger(
                    redis, cooldown_s=settings.trade_cooldown_s, maxlen=settings.stream_maxlen
                )
            ),
        )
        async with RegisterTortoise(app, config=orm_config):
            if owned_chain is not None:
                await owned_chain.start()
            limiter.start()
            logger.info("gateway started", network=settings.bittensor_network)
            try:
                yield
            finally:
                await limiter.stop()
                if owned_chain is not None:
                    await owned_chain.close()
                await redis.aclose()
                logger.info("gateway stopped")

    app = FastAPI(
        title="taostake",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
    )
    errors.install(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(dividends_router)
    app.include_router(trades_router)
    _add_security_scheme(app)
    return app


def _add_security_scheme(app: FastAPI) -> None:
    """Document Bearer auth on every /api/v1 route (the header itself is read in deps)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"}
        }
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/api/"):
                for operation in operations.values():
                    operation["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
