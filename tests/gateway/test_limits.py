"""Hostile input is refused before any token check, body parse or database lookup."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.auth import Authenticator
from gateway.limits import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_QUERY_BYTES
from gateway.scopes import ScopeError
from shared.settings import Settings
from tests.conftest import AUTH, make_settings, running_app
from tests.fakes.chain import FakeChain

TRADES = "/api/v1/trades"
DIVIDENDS = "/api/v1/tao_dividends"


@pytest.fixture
async def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every stored-token lookup the authenticator makes."""
    calls: list[str] = []
    original = Authenticator._lookup

    async def counting(self: Authenticator, token_hash: str) -> Any:
        calls.append(token_hash)
        return await original(self, token_hash)

    monkeypatch.setattr(Authenticator, "_lookup", counting)
    return calls


class TestSizes:
    async def test_body_over_64_kib_is_413_before_auth(
        self, client: httpx.AsyncClient, redis: Redis
    ) -> None:
        body = b'{"netuid": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        response = await client.post(TRADES, content=body)  # no token at all
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert await redis.xlen("stream:dividend_requested") == 0

    async def test_streamed_body_without_length_is_cut_at_64_kib(
        self, client: httpx.AsyncClient
    ) -> None:
        sent = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal sent
            for _ in range(64):
                sent += 8192
                yield b"x" * 8192

        response = await client.post(TRADES, content=chunks(), headers=AUTH)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    async def test_body_under_the_cap_reaches_validation(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TRADES, content=b"{}", headers=AUTH)
        assert response.status_code == 422

    async def test_long_query_is_414_before_auth(self, client: httpx.AsyncClient) -> None:
        response = await client.get(DIVIDENDS, params={"netuid": "1" * (MAX_QUERY_BYTES + 1)})
        assert response.status_code == 414
        assert response.json()["error"]["code"] == "uri_too_long"

    async def test_oversized_headers_are_431(self, client: httpx.AsyncClient) -> None:
        headers = {f"x-pad-{i}": "y" * 1000 for i in range(MAX_HEADER_BYTES // 1000 + 1)}
        response = await client.get(DIVIDENDS, headers=headers)
        assert response.status_code == 431


class TestFailedAuth:
    async def test_failures_are_throttled_per_address_and_stop_db_lookups(
        self, redis_url: str, clean_db: str, redis: Redis, lookups: list[str]
    ) -> None:
        settings = make_settings(redis_url, clean_db, auth_failures_per_min=5)
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            codes = []
            for n in range(40):
                bad = {"Authorization": f"Bearer guess-{n:04d}-abcdefghijk"}
                codes.append((await client.get(DIVIDENDS, headers=bad)).status_code)
            assert codes[:5] == [401] * 5
            assert set(codes[5:]) == {429}
            assert len(lookups) == 5  # a throttled guess costs no database lookup
            last = await client.get(DIVIDENDS, headers={"Authorization": "Bearer x"})
            assert last.status_code == 429
            assert int(last.headers["Retry-After"]) >= 1
            assert last.json()["error"]["code"] == "rate_limited"

    async def test_unauthenticated_queries_leave_no_memory_behind(
        self, client: httpx.AsyncClient
    ) -> None:
        """Thousands of distinct query strings without a token: retained memory stays flat.

        Measured over two bursts after a warm-up, keeping the smaller growth: a one-off
        allocation elsewhere in the process shows in one burst, memory kept per request
        shows in both (1500 kept ~2 KB queries would be ~3 MB each time; the bursts stay
        under any 4096-entry memo that would clear itself and hide the growth).
        """

        async def burst(start: int, count: int) -> None:
            for n in range(start, start + count):
                query = f"netuid={n % 65536}&hotkey={'5' * 40}{n:08d}&pad={'z' * 1800}"
                response = await client.get(f"{DIVIDENDS}?{query}")
                assert response.status_code in (401, 429)

        await burst(0, 200)  # warm-up: lazily built structures, metric children, ...
        growth = []
        tracemalloc.start()
        try:
            for start in (200, 1700):
                gc.collect()
                before = tracemalloc.take_snapshot()
                await burst(start, 1500)
                gc.collect()
                after = tracemalloc.take_snapshot()
                growth.append(sum(s.size_diff for s in after.compare_to(before, "filename")))
        finally:
            tracemalloc.stop()
        assert min(growth) < 1_000_000, f"retained {growth} bytes per 1500 requests"


class TestReadiness:
    async def test_readyz_reads_the_chain_at_most_once_a_second(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        for _ in range(25):
            assert (await client.get("/readyz")).status_code == 200
        assert chain.calls["status"] == 1


class TestStaticTokens:
    def test_short_static_tokens_are_refused_at_start(self, settings: Settings) -> None:
        short = settings.model_copy(update={"api_tokens": SecretStr("tok")})
        with pytest.raises(ScopeError, match="shorter than 16 characters") as info:
            create_app(short, chain=FakeChain())
        assert "'tok'" not in str(info.value)
