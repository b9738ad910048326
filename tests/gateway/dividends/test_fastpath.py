"""The cache-hit fast path answers exactly like the router, and only when it certainly can."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.dividends.fastpath import parse_query
from shared.constants import STREAM_DIVIDEND_REQUESTED
from tests.conftest import AUTH
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", (None, None, None)),
        (b"netuid=0", (0, None, None)),
        (b"netuid=65535&trade=TRUE", (65535, None, True)),
        (f"hotkey={ALICE}".encode(), (None, ALICE, None)),
        (b"netuid=65536", None),
        (b"netuid=-1", None),
        (b"netuid=1&netuid=2", None),
        (b"netuid=%2B1", None),
        (b"other=1", None),
        (b"trade=yes", None),
        (b"hotkey=5abc", None),
        (b"netuid", None),
    ],
)
def test_parse_query(
    raw: bytes, expected: tuple[int | None, str | None, bool | None] | None
) -> None:
    assert parse_query(raw) == expected


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
