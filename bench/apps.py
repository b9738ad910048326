"""Apps served by bench/gateway.py: the bare anchor, a naive Redis handler, and the product."""

from __future__ import annotations

import os

from fastapi import FastAPI
from redis.asyncio import Redis

from gateway.app import create_app
from shared.settings import get_settings
from tests.fakes.chain import FakeChain


def bare() -> FastAPI:
    """The anchor: the cheapest FastAPI endpoint, plus one doing a Redis GET per request."""
    app = FastAPI()
    redis = Redis.from_url(
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"), max_connections=2000
    )

    @app.get("/bare")
    async def bare_endpoint() -> dict[str, int]:
        return {"dividend": 1}

    @app.get("/naive")
    async def naive() -> dict[str, int]:
        value = await redis.get("bench:naive")
        return {"dividend": int(value or 0)}

    return app


def product() -> FastAPI:
    """The real gateway as deployed (auth, rate limits, metrics, logs), chain replaced by a fake
    that answers after 20 ms like a nearby node."""
    data = {n: {"5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY": n * 1000} for n in range(64)}
    return create_app(get_settings(), chain=FakeChain(data, delay_s=0.02), freeze_heap=True)
