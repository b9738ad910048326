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
from gateway.console.router import router as console_router
from gateway.dividends.cache import DividendsCache
from gateway.dividends.fastpath import DividendsFastPath
from gateway.dividends.router import router as dividends_router
from gateway.dividends.service import DividendsService
from gateway.limits import FailedAuthThrottle
from gateway.middleware import RequestContextMiddleware
from gateway.positions.router import router as positions_router
from gateway.ratelimit import RateLimiter
from gateway.scopes import parse_static_tokens
from gateway.scores.router import router as scores_router
from gateway.state import AppState
from gateway.streams.router import router as streams_router
from gateway.trades.router import router as trades_router
from gateway.trades.trigger import TradeService
from shared.cache import TwoLevelCache
from shared.chain import ChainClient, SubtensorChain
from shared.chain.subtensor import redact_url
from shared.constants import KEY_DIVIDENDS_CACHE
from shared.db.config import tortoise_config
from shared.db.migrate import ensure_sqlite_dir
from shared.db.schema import schema_status
from shared.heap import freeze_startup_heap
from shared.logging import configure_logging
from shared.redis import create_redis
from shared.settings import Settings, get_settings
from shared.signing import configure_signing
from shared.trades import TradeTrigger
from shared.version import project_version

DESCRIPTION = """
Tao dividends of Bittensor hotkeys, from a two-level cache or the chain, and a
sentiment-driven stake trade enqueued on request.

Authenticate with `Authorization: Bearer <token>` (tokens from `API_TOKENS` or
`python -m gateway tokens create NAME --scopes read,trade`). Scopes: `read`
(dividends, the caller's own trades), `trade` (enqueue trades), `admin` (every
caller's trades). A missing scope answers 403 `insufficient_scope`; each route
lists the scopes it needs.
"""


def create_app(
    settings: Settings | None = None,
    *,
    chain: ChainClient | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app. Pass `chain` to use a client other than `SubtensorChain` (tests), and
    `freeze_heap` when the app is the process's only one (`serve_app`): its start-up heap is
    then frozen once the lifespan has started everything (`shared.heap`)."""
    settings = settings or get_settings()
    configure_logging(settings)
    static_tokens = parse_static_tokens(settings.static_tokens())  # a bad entry stops start-up
    configure_signing(settings)  # trades are signed stream events: no key, no gateway

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
        auth_throttle = FailedAuthThrottle(settings.auth_failures_per_min)
        app.state.services = AppState(
            settings=settings,
            redis=redis,
            chain=chain_client,
            # Computes each static token's owner label (a slow KDF) once, at start-up.
            auth=Authenticator(
                static_tokens,
                cache_ttl_s=settings.auth_cache_ttl_s,
                throttle=auth_throttle,
                max_lookups=settings.auth_lookup_concurrency,
            ),
            limiter=limiter,
            dividends=DividendsService(
                chain_client, DividendsCache(cache), timeout_s=settings.chain_timeout_s
            ),
            trades=TradeService(
                TradeTrigger(
                    redis, cooldown_s=settings.trade_cooldown_s, maxlen=settings.stream_maxlen
                )
            ),
            auth_throttle=auth_throttle,
        )
        async with RegisterTortoise(app, config=orm_config):
            await _report_schema()
            if owned_chain is not None:
                await owned_chain.start()
            limiter.start()
            logger.info("gateway started", network=redact_url(settings.bittensor_network))
            if freeze_heap:
                logger.info("start-up heap frozen", objects=freeze_startup_heap())
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
        version=project_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        responses=errors.documented(errors.PRE_AUTH),
        # A trailing slash is a 404, not a redirect that would echo the request's Host header
        # back in its Location before any token is checked.
        redirect_slashes=False,
    )
    errors.install(app)
    # The last added runs first: request id, limits and the access log wrap the fast path too.
    app.add_middleware(DividendsFastPath)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(dividends_router)
    app.include_router(trades_router)
    app.include_router(positions_router)
    app.include_router(scores_router)
    app.include_router(streams_router)
    app.include_router(console_router)
    _customise_openapi(app)
    return app


def serve_app() -> FastAPI:
    """The app `gateway serve` runs (uvicorn's factory): the process's only app, its start-up
    heap frozen once it has started."""
    return create_app(freeze_heap=True)


def _customise_openapi(app: FastAPI) -> None:
    """Make the generated document say what the app answers.

    - Errors have one shape, `ErrorBody`: FastAPI's own 422 `HTTPValidationError` (a
      `{"detail": [...]}` body the app never sends) is replaced wherever FastAPI adds it.
    - An optional query parameter is documented as its type alone: FastAPI writes
      `anyOf: [T, null]`, but a query string cannot carry a null; the parameter is omitted.
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schemas = schema.get("components", {}).get("schemas", {})
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                _fix_validation_error(operation.get("responses", {}))
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query" and not parameter.get("required"):
                        parameter["schema"] = _without_null(parameter["schema"])
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _fix_validation_error(responses: dict[str, Any]) -> None:
    unprocessable = responses.get("422")
    if unprocessable is None:
        return
    content = unprocessable.setdefault("content", {}).setdefault("application/json", {})
    if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        content["schema"] = dict(_ERROR_REF)
        unprocessable["description"] = "`validation_error`: invalid input (the message names it)"


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    variants = schema.get("anyOf")
    if not isinstance(variants, list):
        return schema
    kept = [variant for variant in variants if variant != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(variants):
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **rest}


async def _report_schema() -> None:
    """Say at start when the schema is missing or old (the routes that need it answer 503)."""
    try:
        problem = (await schema_status()).problem()
    except Exception as exc:  # unreachable database: /readyz reports it
        logger.warning("could not check the database schema", error=type(exc).__name__)
        return
    if problem is not None:
        logger.error("{}", problem)
