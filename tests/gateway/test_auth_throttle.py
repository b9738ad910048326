"""The failed-auth throttle guards database lookups only, and never locks out a known token.

- A token known valid without I/O (static, or a stored token remembered valid) passes
  whatever the address's failures, on the fast path and in the router alike; so does a
  stored token found valid before, at the cost of a lookup (a revocation counts).
- Failures are counted per client: IPv4 address, or IPv6 /64.
- Stored-token lookups in flight are bounded process-wide: beyond the bound, 503 at once.
- Rate limits count per owner (a stored token's name, a static token's label), so no
  function of a token's plain SHA-256 reaches Redis keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.auth import NEGATIVE_TTL_S, Authenticator
from gateway.limits import client_key
from gateway.scopes import static_owner
from gateway.tokens import create_token, revoke_token
from tests.conftest import AUTH, TOKENS, make_settings
from tests.fakes.chain import ALICE, FakeChain
from tests.gateway.conftest import bearer

DIVIDENDS = "/api/v1/tao_dividends"
CACHED = {"netuid": "3", "hotkey": ALICE, "trade": "false"}
MISS = {"netuid": "1", "hotkey": ALICE, "trade": "false"}
FAILURES = 5


@contextlib.asynccontextmanager
async def serving(app: FastAPI, client: str = "203.0.113.7") -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI, with requests coming from `client`."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


def from_address(app: FastAPI, client: str) -> httpx.AsyncClient:
    """Another client of the same (already started) app."""
    transport = httpx.ASGITransport(app=app, client=(client, 40001))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def fail(client: httpx.AsyncClient, times: int, tag: str = "x") -> list[int]:
    codes = []
    for n in range(times):
        guess = bearer(f"guess-{tag}-{n:04d}-abcdefghijk")
        codes.append((await client.get(DIVIDENDS, params=MISS, headers=guess)).status_code)
    return codes


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = Authenticator._lookup

    async def counting(self: Authenticator, token_hash: str) -> Any:
        calls.append(token_hash)
        return await original(self, token_hash)

    monkeypatch.setattr(Authenticator, "_lookup", counting)
    return calls


@pytest.fixture
def app(redis_url: str, clean_db: str, redis: Redis, chain: FakeChain) -> FastAPI:
    return create_app(
        make_settings(redis_url, clean_db, auth_failures_per_min=FAILURES), chain=chain
    )


class TestKnownTokensAreNeverThrottled:
    async def test_a_static_token_passes_on_the_fast_path_and_in_the_router(
        self, app: FastAPI
    ) -> None:
        async with serving(app) as client:
            assert (await client.get(DIVIDENDS, params=CACHED, headers=AUTH)).status_code == 200
            assert set((await fail(client, FAILURES + 2))[FAILURES:]) == {429}  # throttled now
            # The same answer whichever path serves it: a cache hit (fast path), a miss
            # (router) and another route.
            hit = await client.get(DIVIDENDS, params=CACHED, headers=AUTH)
            miss = await client.get(DIVIDENDS, params={**MISS, "netuid": "2"}, headers=AUTH)
            trades = await client.get("/api/v1/stake_actions", headers=AUTH)
            assert (hit.status_code, miss.status_code, trades.status_code) == (200, 200, 200)
            # An unknown token from the same address is still refused before any lookup.
            still = await client.get(DIVIDENDS, headers=bearer("another-guess-0123456789"))
            assert still.status_code == 429 and still.headers["Retry-After"]

    async def test_a_remembered_stored_token_passes_without_a_lookup(
        self, app: FastAPI, lookups: list[str]
    ) -> None:
        async with serving(app) as client:
            token = await create_token("dashboard")
            assert (await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))).is_success
            assert len(lookups) == 1
            await fail(client, FAILURES + 2)
            assert len(lookups) == 1 + FAILURES  # the throttled guesses cost no lookup
            for params in (CACHED, {**MISS, "netuid": "2"}):
                response = await client.get(DIVIDENDS, params=params, headers=bearer(token))
                assert response.status_code == 200
            assert len(lookups) == 1 + FAILURES

    async def test_a_stored_token_not_yet_checked_waits_out_the_throttle(
        self, app: FastAPI, lookups: list[str]
    ) -> None:
        """Its check needs a lookup, which is what the throttle guards."""
        async with serving(app) as client:
            token = await create_token("late")
            await fail(client, FAILURES)
            response = await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))
            assert response.status_code == 429 and len(lookups) == FAILURES
            other = from_address(app, "198.51.100.9")
            async with other:
                elsewhere = await other.get(DIVIDENDS, params=CACHED, headers=bearer(token))
            assert elsewhere.status_code == 200

    async def test_a_stored_token_proven_before_is_looked_up_again_but_never_throttled(
        self, redis_url: str, clean_db: str, redis: Redis, chain: FakeChain, lookups: list[str]
    ) -> None:
        """Behind one address (a proxy), other clients' failures must not lock a valid stored
        token out once its memory (AUTH_CACHE_TTL_S) expires; a revocation still counts."""
        settings = make_settings(
            redis_url, clean_db, auth_failures_per_min=FAILURES, auth_cache_ttl_s=0.2
        )
        async with serving(create_app(settings, chain=chain)) as client:
            token = await create_token("dashboard")
            assert (await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))).is_success
            await fail(client, FAILURES + 1)
            await asyncio.sleep(0.3)  # remembered no more
            checked = len(lookups)
            again = await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))
            assert again.status_code == 200 and len(lookups) == checked + 1
            await revoke_token("dashboard")
            await asyncio.sleep(0.3)
            revoked = await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))
            assert revoked.status_code == 401
            await asyncio.sleep(NEGATIVE_TTL_S + 0.1)  # not even remembered bad now
            throttled = await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))
            assert throttled.status_code == 429


class TestClientKeys:
    @pytest.mark.parametrize(
        ("host", "key"),
        [
            ("203.0.113.7", "203.0.113.7"),
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("testclient", "testclient"),
            (None, "unknown"),
        ],
    )
    def test_ipv6_clients_are_keyed_by_their_64(self, host: str | None, key: str) -> None:
        assert client_key(host) == key

    async def test_rotating_addresses_inside_one_64_shares_one_budget(self, app: FastAPI) -> None:
        async with serving(app, client="2001:db8:1:2::1") as client:
            assert await fail(client, FAILURES) == [401] * FAILURES
            async with from_address(app, "2001:db8:1:2:dead:beef:0:1") as same_64:
                assert await fail(same_64, 1, "y") == [429]
            async with from_address(app, "2001:db8:1:3::1") as other_64:
                assert await fail(other_64, 1, "z") == [401]


class TestLookupBound:
    async def test_lookups_beyond_the_bound_answer_503_at_once(
        self, redis_url: str, clean_db: str, redis: Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        release = asyncio.Event()
        started: list[str] = []

        async def slow(self: Authenticator, token_hash: str) -> None:
            started.append(token_hash)
            await release.wait()
            return None

        monkeypatch.setattr(Authenticator, "_lookup", slow)
        settings = make_settings(
            redis_url, clean_db, auth_lookup_concurrency=2, auth_failures_per_min=1000
        )
        app = create_app(settings, chain=FakeChain())
        async with serving(app) as client:
            requests = [
                asyncio.ensure_future(
                    client.get(DIVIDENDS, headers=bearer(f"unknown-token-{n:02d}-abcdef"))
                )
                for n in range(6)
            ]
            done, pending = await asyncio.wait(requests, timeout=3)
            assert len(started) == 2  # only the bound's worth reached the database
            assert len(done) == 4, "the requests beyond the bound should not wait"
            for task in done:
                response = task.result()
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "auth_busy"
                assert response.headers["Retry-After"] == "1"
            release.set()
            assert [(await task).status_code for task in pending] == [401, 401]
            # A known token never needs a slot.
            assert (await client.get(DIVIDENDS, params=CACHED, headers=AUTH)).status_code == 200


class TestRateLimitSubjects:
    async def test_redis_keys_name_the_owner_never_a_token_hash(
        self, app: FastAPI, redis: Redis
    ) -> None:
        async with serving(app) as client:
            token = await create_token("bot")
            for _ in range(2):  # a router answer, then a fast-path cache hit
                assert (await client.get(DIVIDENDS, params=CACHED, headers=AUTH)).is_success
                assert (
                    await client.get(DIVIDENDS, params=CACHED, headers=bearer(token))
                ).is_success

            async def keys() -> set[str]:
                return {k.decode() async for k in redis.scan_iter("ratelimit:*")}

            for _ in range(100):
                if len(await keys()) >= 2:
                    break
                await asyncio.sleep(0.05)
            found = await keys()
        subjects = {key.split(":", 2)[2].rsplit(":", 1)[0] for key in found}
        assert subjects == {static_owner(TOKENS[0]), "bot"}
        for secret in (TOKENS[0], token):
            digest = hashlib.sha256(secret.encode()).hexdigest()
            assert not any(digest[:12] in key for key in found)
