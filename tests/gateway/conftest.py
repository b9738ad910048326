"""Tokens of each scope, as static API_TOKENS entries, and an app that knows them all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.scopes import static_owner
from tests.conftest import TOKENS, make_settings, running_app
from tests.fakes.chain import FakeChain

TRADER = TOKENS[0]  # a plain entry: read,trade
OTHER_TRADER = TOKENS[1]
READER = "test-token-reader-789"
ADMIN = "test-token-admin-000"
SCOPED_ENTRIES = [*TOKENS, f"{READER}:read", f"{ADMIN}:read+admin"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def owner(token: str) -> str:
    return static_owner(token)


@pytest.fixture
async def scoped(
    redis_url: str, clean_db: str, redis: Redis, chain: FakeChain
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        redis_url, clean_db, api_tokens=SecretStr(",".join(SCOPED_ENTRIES)), trade_by_default=True
    )
    async with running_app(create_app(settings, chain=chain)) as client:
        yield client
