"""Regression tests for defects found in review: SS58 spellings, joiners' cooldown,
the gateway's deadline vs the chain client's own timeout accounting."""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from gateway.app import create_app
from shared.constants import STREAM_DIVIDEND_REQUESTED
from shared.ss58 import decode_ss58, encode_ss58
from tests.conftest import AUTH, make_settings, running_app
from tests.fakes.chain import ALICE, FakeChain

URL = "/api/v1/tao_dividends"


async def test_other_spellings_of_a_hotkey_share_cache_and_cooldown(
    client: httpx.AsyncClient, chain: FakeChain, redis: Redis
) -> None:
    polkadot = encode_ss58(decode_ss58(ALICE), 0)  # the same account, network prefix 0
    assert polkadot != ALICE
    first = (await client.get(URL, params={"netuid": 3, "hotkey": ALICE}, headers=AUTH)).json()
    second = (await client.get(URL, params={"netuid": 3, "hotkey": polkadot}, headers=AUTH)).json()
    assert second["hotkey"] == ALICE and second["dividend"] == 123_456_789
    assert second["cached"] is True and chain.reads == 1
    assert second["stake_tx_triggered"] is False and second["trade_id"] == first["trade_id"]
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1
    hotkey_only = (
        await client.get(URL, params={"hotkey": polkadot, "trade": "false"}, headers=AUTH)
    ).json()
    assert {d["netuid"] for d in hotkey_only["dividends"]} == {0, 3}


async def test_joiners_keep_the_full_cooldown(client: httpx.AsyncClient) -> None:
    params = {"netuid": 3, "hotkey": ALICE, "trade": "true"}
    bodies = [
        r.json()
        for r in await asyncio.gather(
            *(client.get(URL, params=params, headers=AUTH) for _ in range(5))
        )
    ]
    joiners = [b for b in bodies if not b["stake_tx_triggered"]]
    assert len(joiners) == 4
    assert all("ends in 0s" not in b["trade_detail"] for b in joiners)
    later = (await client.get(URL, params=params, headers=AUTH)).json()
    assert later["trade_status"] == "cooldown" and "ends in 0s" not in later["trade_detail"]


async def test_gateway_deadline_leaves_the_chain_client_its_own_timeout(
    redis_url: str, clean_db: str, redis: Redis
) -> None:
    class CountingChain(FakeChain):
        """Times out by itself like SubtensorChain does, counting its timeouts."""

        timeouts = 0

        async def dividend(self, netuid: int, hotkey: str):  # type: ignore[no-untyped-def]
            from shared.errors import ChainTimeout

            try:
                await asyncio.wait_for(asyncio.Event().wait(), 0.2)
            except TimeoutError as exc:
                CountingChain.timeouts += 1
                raise ChainTimeout("chain did not answer dividend within 0.2s") from exc

    settings = make_settings(redis_url, clean_db, chain_timeout_s=0.2)
    async with running_app(create_app(settings, chain=CountingChain())) as client:
        for _ in range(2):
            response = await client.get(
                URL, params={"netuid": 3, "hotkey": ALICE, "trade": "false"}, headers=AUTH
            )
            assert response.status_code == 504
    assert CountingChain.timeouts == 2  # the client's own timeout fired, not the gateway's
