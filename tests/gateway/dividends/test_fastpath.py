"""The cache-hit fast path answers exactly like the router, and only when it certainly can."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.app import create_app
from shared.constants import STREAM_DIVIDEND_REQUESTED
from shared.ss58 import decode_ss58, encode_ss58
from tests.conftest import AUTH, make_settings, running_app
from tests.fakes.chain import ALICE, DEFAULT_HOTKEY, FakeChain
from tests.gateway.conftest import READER, TRADER, bearer

URL = "/api/v1/tao_dividends"


def _fast_hits() -> float:
    return REGISTRY.get_sample_value("taostake_fastpath_hits_total") or 0.0


@pytest.mark.parametrize(
    "params",
    [
        {"netuid": "3", "hotkey": ALICE, "trade": "false"},
        {"netuid": "3", "trade": "false"},
        {"netuid": "0", "trade": "0"},
        {"hotkey": ALICE, "trade": "false"},
        {"trade": "false"},
    ],
)
async def test_fast_answers_equal_router_answers(
    client: httpx.AsyncClient, chain: FakeChain, params: dict[str, str]
) -> None:
    slow = await client.get(URL, params=params, headers=AUTH)
    before = _fast_hits()
    fast = await client.get(URL, params=params, headers=AUTH)
    assert _fast_hits() == before + 1
    assert slow.status_code == fast.status_code == 200
    expected = {**slow.json(), "cached": True}
    assert fast.json() == expected
    assert fast.headers["content-type"] == "application/json"
    assert fast.headers["x-request-id"]
    assert chain.reads == 1


async def test_trade_hits_are_fast_only_inside_a_known_cooldown(
    client: httpx.AsyncClient,
) -> None:
    params = {"netuid": "18", "hotkey": DEFAULT_HOTKEY, "trade": "true"}
    first = (await client.get(URL, params=params, headers=AUTH)).json()
    before = _fast_hits()
    second = (await client.get(URL, params=params, headers=AUTH)).json()
    assert _fast_hits() == before + 1
    assert first["stake_tx_triggered"] is True
    assert second["stake_tx_triggered"] is False and second["trade_status"] == "cooldown"
    assert second["trade_id"] == first["trade_id"]


async def test_unknown_tokens_and_odd_queries_take_the_router(
    client: httpx.AsyncClient,
) -> None:
    await client.get(URL, params={"netuid": "3", "trade": "false"}, headers=AUTH)
    before = _fast_hits()
    bad_token = await client.get(
        URL, params={"netuid": "3", "trade": "false"}, headers={"Authorization": "Bearer nope"}
    )
    odd = await client.get(URL, params={"netuid": "03x", "trade": "false"}, headers=AUTH)
    assert bad_token.status_code == 401 and odd.status_code == 422
    assert _fast_hits() == before


async def test_1000_concurrent_first_trades_of_a_held_answer_enqueue_exactly_one(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    params = {"netuid": "3", "hotkey": ALICE}
    await client.get(URL, params={**params, "trade": "false"}, headers=AUTH)
    before = _fast_hits()
    responses = await asyncio.gather(
        *(client.get(URL, params={**params, "trade": "true"}, headers=AUTH) for _ in range(1000))
    )
    assert _fast_hits() == before + 1000
    bodies = [r.json() for r in responses]
    assert sum(b["stake_tx_triggered"] for b in bodies) == 1
    assert len({b["trade_id"] for b in bodies}) == 1
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1


class TestScopes:
    """The fast path applies the router's scope rule: it never serves what the router refuses."""

    async def test_read_token_is_served_fast_without_a_trade_and_refused_a_trade(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        pair = {"netuid": "18", "hotkey": DEFAULT_HOTKEY}
        traded = await scoped.get(URL, params={**pair, "trade": "true"}, headers=bearer(TRADER))
        assert traded.json()["stake_tx_triggered"] is True  # cache warm, cooldown known
        before = _fast_hits()
        omitted = await scoped.get(URL, params=pair, headers=bearer(READER))
        assert _fast_hits() == before + 1 and omitted.status_code == 200
        body = omitted.json()
        assert body["stake_tx_triggered"] is False and body["trade_status"] == "not_requested"
        assert body["trade_id"] is None
        asked = await scoped.get(URL, params={**pair, "trade": "true"}, headers=bearer(READER))
        assert asked.status_code == 403
        assert asked.json()["error"]["code"] == "insufficient_scope"
        assert _fast_hits() == before + 1
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1

    async def test_a_misspelled_opt_out_trades_on_neither_path(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        """An omitted `trade` follows TRADE_BY_DEFAULT (true) for a trade token: `Trade=false`
        or `trades=0` must be refused, not read as omitted, whether the answer is held (fast
        path) or not (router)."""
        pair = {"netuid": "18", "hotkey": DEFAULT_HOTKEY}
        for misspelled in ({"Trade": "false"}, {"trades": "0"}):  # the first one: a miss
            refused = await scoped.get(URL, params={**pair, **misspelled}, headers=bearer(TRADER))
            assert refused.status_code == 422
            name = next(iter(misspelled))
            assert refused.json()["error"]["message"] == (
                f"{name}: unknown parameter (this route takes netuid, hotkey, trade)"
            )
        held = await scoped.get(URL, params={**pair, "trade": "false"}, headers=bearer(TRADER))
        assert held.status_code == 200  # the answer is held now
        before = _fast_hits()
        refused = await scoped.get(URL, params={**pair, "Trade": "false"}, headers=bearer(TRADER))
        assert refused.status_code == 422 and _fast_hits() == before
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0

    async def test_trade_token_with_trade_omitted_still_sees_its_cooldown(
        self, scoped: httpx.AsyncClient
    ) -> None:
        first = (await scoped.get(URL, headers=bearer(TRADER))).json()
        before = _fast_hits()
        second = (await scoped.get(URL, headers=bearer(TRADER))).json()
        assert _fast_hits() == before + 1
        assert second["trade_status"] == "cooldown" and second["trade_id"] == first["trade_id"]
        reader = (await scoped.get(URL, headers=bearer(READER))).json()
        assert reader["trade_status"] == "not_requested" and reader["trade_id"] is None


def _answer(response: httpx.Response) -> tuple[int, object, dict[str, str]]:
    """What a client sees, less what differs between any two requests (request id, `cached`)."""
    body = response.json()
    if "error" in body:
        assert body["error"].pop("request_id") == response.headers["x-request-id"]
    body.pop("cached", None)
    headers = {
        name: response.headers[name]
        for name in ("content-type", "www-authenticate", "allow")
        if name in response.headers
    }
    if "retry-after" in response.headers:
        headers["retry-after"] = "present"
    return response.status_code, body, headers


BAD_CHECKSUM = ALICE[:-1] + ("X" if ALICE[-1] != "X" else "Y")


class TestAgreesWithTheRouter:
    """One request, one answer: whether the fast path (answer in memory) or the router (a miss)
    serves it. The first request of each pair is a miss, the second finds the answer held."""

    @pytest.mark.parametrize(
        ("query", "fast"),
        [
            # Spellings the router has always accepted: the fast path reads them the same way.
            ("netuid=3&trade=false", True),
            ("netuid=%2B3&trade=0", True),
            ("netuid=3.0&trade=off", True),
            ("netuid=1&netuid=3&trade=false", True),
            (f"hotkey={ALICE}&trade=false", True),
            # Refused queries are never the fast path's: each answers the router's 422.
            ("netuid=70000&trade=false", False),
            ("netuid=3&netuid=x&trade=false", False),
            ("netuid=70000&trade=maybe", False),
            ("trade=", False),
            (f"netuid=3&hotkey={BAD_CHECKSUM}&trade=false", False),
            (f"hotkey={ALICE[:-3]}&trade=false", False),
            # A name the route does not declare: refused, never read as an omitted trade.
            ("other=1&netuid=0&trade=FALSE", False),
            ("netuid=3&Trade=false", False),
            ("netuid=3&trade%20=false", False),
        ],
    )
    async def test_queries(
        self, client: httpx.AsyncClient, chain: FakeChain, query: str, fast: bool
    ) -> None:
        miss = await client.get(f"{URL}?{query}", headers=AUTH)
        before = _fast_hits()
        second = await client.get(f"{URL}?{query}", headers=AUTH)
        assert _fast_hits() == before + fast
        assert _answer(second) == _answer(miss)
        assert miss.status_code == (200 if fast else 422)
        assert chain.reads == (1 if fast else 0)

    async def test_other_spellings_of_a_cached_query_are_hits(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        polkadot = encode_ss58(decode_ss58(ALICE), 0)
        miss = await client.get(
            URL, params={"netuid": 3, "hotkey": ALICE, "trade": "false"}, headers=AUTH
        )
        before = _fast_hits()
        hit = await client.get(f"{URL}?netuid=03&hotkey={polkadot}&trade=0", headers=AUTH)
        assert _fast_hits() == before + 1 and chain.reads == 1
        assert _answer(hit) == _answer(miss)

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dGVzdDp0ZXN0"},
            {"Authorization": "Bearer wrong-token-0123456789"},
        ],
    )
    async def test_refused_credentials(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        params = {"netuid": "3", "trade": "false"}
        cold = await client.get(URL, params=params, headers=headers)  # nothing held: the router
        await client.get(URL, params=params, headers=AUTH)
        warm = await client.get(URL, params=params, headers=headers)  # held: the fast path
        assert cold.status_code == 401
        assert _answer(warm) == _answer(cold)

    async def test_missing_trade_scope(self, scoped: httpx.AsyncClient, redis: Redis) -> None:
        params = {"netuid": "3", "hotkey": ALICE, "trade": "true"}
        cold = await scoped.get(URL, params=params, headers=bearer(READER))
        await scoped.get(URL, params={**params, "trade": "false"}, headers=bearer(READER))
        warm = await scoped.get(URL, params=params, headers=bearer(READER))
        assert cold.status_code == 403
        assert _answer(warm) == _answer(cold)
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0

    async def test_read_limit_counts_each_request_once(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        settings = make_settings(redis_url, clean_db, rate_limit_per_min=3)
        params = {"netuid": "3", "trade": "false"}
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            before = _fast_hits()
            served = [await client.get(URL, params=params, headers=AUTH) for _ in range(4)]
            fast = _fast_hits() - before
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            misses = [
                await client.get(URL, params={"netuid": n, "trade": "false"}, headers=AUTH)
                for n in range(10, 14)
            ]
        assert fast == 2  # the first was a miss, the fourth was refused
        assert [r.status_code for r in served] == [r.status_code for r in misses]
        assert [r.status_code for r in served] == [200, 200, 200, 429]
        assert _answer(served[3]) == _answer(misses[3])

    async def test_trade_limit_and_the_first_trade_of_a_held_answer(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        settings = make_settings(redis_url, clean_db, trade_rate_limit_per_min=1)
        params = {"netuid": "3", "hotkey": ALICE}
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            await client.get(URL, params={**params, "trade": "false"}, headers=AUTH)
            before = _fast_hits()
            first = await client.get(
                URL, params={**params, "trade": "true"}, headers={**AUTH, "X-Request-ID": "fast-1"}
            )
            assert _fast_hits() == before + 1
            limited = await client.get(URL, params={**params, "trade": "true"}, headers=AUTH)
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            cold = [
                await client.get(URL, params={"netuid": n, "trade": "true"}, headers=AUTH)
                for n in (10, 11)
            ]
        assert first.json()["stake_tx_triggered"] is True
        [(_, fields)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED, count=1)
        assert (
            fields[b"request_id"] == b"fast-1"
            and fields[b"trade_id"].decode() == (first.json()["trade_id"])
        )
        assert [c.status_code for c in cold] == [200, 429]
        assert _answer(limited) == _answer(cold[1])

    async def test_a_hit_is_labelled_with_its_route(self, client: httpx.AsyncClient) -> None:
        def served() -> float:
            labels = {"method": "GET", "route": URL, "status": "200"}
            return REGISTRY.get_sample_value("taostake_http_requests_total", labels) or 0.0

        params = {"netuid": "3", "trade": "false"}
        await client.get(URL, params=params, headers=AUTH)
        before, hits = served(), _fast_hits()
        await client.get(URL, params=params, headers=AUTH)
        assert _fast_hits() == hits + 1 and served() == before + 1

    async def test_other_methods_are_the_routers(self, client: httpx.AsyncClient) -> None:
        params = {"netuid": "3", "trade": "false"}
        await client.get(URL, params=params, headers=AUTH)
        before = _fast_hits()
        response = await client.post(URL, params=params, headers=AUTH)
        assert response.status_code == 405 and response.headers["allow"] == "GET"
        assert _fast_hits() == before
