"""The real gateway against the simulated node: no chain override, so the app builds its own
`SubtensorChain` (bittensor's AsyncSubtensor) from BITTENSOR_NETWORK=node.url; real Redis
and PostgreSQL behind it. Expected values are read from the node's own state.
Skipped when the recorded metadata is absent.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.app import create_app
from shared.settings import Settings
from tests.conftest import AUTH, make_settings, running_app
from tests.devchain import FIXTURES_HINT, DevChain, fixtures_dir, free_port
from tests.devchain.seed import DEMO_HOTKEY, seed_demo

os.environ["BT_MEV_PROTECTION"] = "0"

pytestmark = [
    pytest.mark.devchain,
    pytest.mark.skipif(fixtures_dir() is None, reason=FIXTURES_HINT),
]

UNITS = {
    315: ("TaoDividendsPerSubnet", "tao_rao"),
    393: ("RootAlphaDividendsPerSubnet", "alpha_rao"),
}


def gateway_settings(redis_url: str, database_url: str, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bittensor_network": url,
        "chain_timeout_s": 3.0,
        "chain_connect_timeout_s": 10.0,
        "chain_retry_max_s": 0.3,
        "trade_by_default": False,
    }
    values.update(overrides)
    return make_settings(redis_url, database_url, **values)


async def poll(check: Callable[[], Awaitable[Any]], within_s: float = 10.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within_s}s")
        await asyncio.sleep(0.1)


async def dividends(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.get("/api/v1/tao_dividends", params=params, headers=AUTH)


@pytest.fixture
async def node393() -> AsyncIterator[DevChain]:
    async with DevChain(spec=393) as node:
        yield node


# ====================================================================== reads
@pytest.mark.parametrize("spec", [315, 393], ids=lambda spec: f"spec{spec}")
async def test_dividends_from_the_node_one_entry_one_subnet_one_hotkey_and_all(
    spec: int, redis_url: str, clean_db: str, redis: Redis
) -> None:
    storage, unit = UNITS[spec]
    async with DevChain(spec=spec) as node:
        world = seed_demo(node)  # subnets 0, 1, 3, 18; four hotkeys each
        node.seal_block()
        settings = gateway_settings(redis_url, clean_db, node.url)
        async with running_app(create_app(settings)) as client:
            one = await dividends(client, netuid=18, hotkey=DEMO_HOTKEY)
            calls_before_repeat = node.total_rpc_calls
            again = await dividends(client, netuid=18, hotkey=DEMO_HOTKEY)
            repeat_calls = node.total_rpc_calls - calls_before_repeat
            subnet = await dividends(client, netuid=3)
            hotkey = await dividends(client, hotkey=DEMO_HOTKEY)
            everything = await dividends(client)

    assert node.dividend_storage == storage
    body = one.json()
    assert one.status_code == 200, body
    assert body["dividend"] == node.dividend(18, DEMO_HOTKEY) == world[18][DEMO_HOTKEY] > 0
    assert (body["netuid"], body["hotkey"], body["cached"]) == (18, DEMO_HOTKEY, False)
    assert (body["storage"], body["unit"], body["block"]) == (storage, unit, 1)
    assert body["stake_tx_triggered"] is False and body["trade_id"] is None
    assert again.json()["cached"] is True and again.json()["dividend"] == body["dividend"]
    assert repeat_calls == 0  # answered from the cache, not the node

    expected_3 = {(3, hot): amount for hot, amount in node.dividends(3).items()}
    got_3 = subnet.json()
    assert subnet.status_code == 200, got_3
    assert {(e["netuid"], e["hotkey"]): e["dividend"] for e in got_3["dividends"]} == expected_3
    assert got_3["count"] == len(expected_3) == 4
    assert (got_3["storage"], got_3["unit"], got_3["block"]) == (storage, unit, 1)
    assert {e["unit"] for e in got_3["dividends"]} == {unit}

    got_hot = hotkey.json()
    assert hotkey.status_code == 200, got_hot
    assert [(e["netuid"], e["dividend"]) for e in got_hot["dividends"]] == [
        (18, world[18][DEMO_HOTKEY])
    ]

    got_all = everything.json()
    assert everything.status_code == 200, got_all
    expected_all = {
        (netuid, hot): amount
        for netuid, amounts in world.items()
        for hot, amount in amounts.items()
    }
    assert {(e["netuid"], e["hotkey"]): e["dividend"] for e in got_all["dividends"]} == expected_all
    assert got_all["count"] == 16 and got_all["storage"] == storage


# ====================================================================== faults
async def test_stalled_node_is_504_within_chain_timeout(
    node393: DevChain, redis_url: str, clean_db: str, redis: Redis
) -> None:
    node = node393
    seed_demo(node)
    settings = gateway_settings(redis_url, clean_db, node.url, chain_timeout_s=1.0)
    async with running_app(create_app(settings)) as client:
        warm = await dividends(client, netuid=3)  # connected, metadata decoded
        node.stall()
        started = time.monotonic()
        stalled = await dividends(client, netuid=18, hotkey=DEMO_HOTKEY)
        elapsed = time.monotonic() - started
        node.unstall()

    assert warm.status_code == 200
    assert stalled.status_code == 504, stalled.text
    error = stalled.json()["error"]
    assert error["code"] == "chain_timeout" and error["request_id"]
    assert 0.95 <= elapsed < 1.0 + 0.75


async def test_readyz_follows_the_node_and_tao_dividends_fails_fast_once_it_is_gone(
    node393: DevChain, redis_url: str, clean_db: str, redis: Redis
) -> None:
    node = node393
    seed_demo(node)
    node.seal_block()
    settings = gateway_settings(redis_url, clean_db, node.url, chain_timeout_s=1.0)
    async with running_app(create_app(settings)) as client:
        ready = await client.get("/readyz")
        await node.stop()

        async def not_ready() -> httpx.Response | None:
            response = await client.get("/readyz")
            return response if response.status_code == 503 else None

        gone = await poll(not_ready)
        after = await dividends(client, netuid=18, hotkey=DEMO_HOTKEY)

    assert ready.status_code == 200, ready.text
    chain = ready.json()["checks"]["chain"]
    assert chain == {
        "ok": True,
        "block": node.head.number,
        "storage": "RootAlphaDividendsPerSubnet",
        "network": node.url,
    }
    checks = gone.json()["checks"]
    assert gone.json()["status"] == "not_ready"
    assert checks["chain"]["ok"] is False
    assert checks["redis"] == {"ok": True} and checks["database"] == {"ok": True}
    assert after.status_code == 503, after.text  # fails fast: no wait for a timeout
    assert after.json()["error"]["code"] == "chain_unavailable"


async def test_unreachable_chain_at_start_starts_anyway_answers_503_then_recovers(
    redis_url: str, clean_db: str, redis: Redis
) -> None:
    port = free_port()
    settings = gateway_settings(
        # The start waits at most this for the chain; once the node is there a connect also
        # decodes its metadata (~2 s of CPU here, the node sharing the loop), under this bound.
        redis_url,
        clean_db,
        f"ws://127.0.0.1:{port}",
        chain_connect_timeout_s=5.0,
    )
    started = time.monotonic()
    async with running_app(create_app(settings)) as client:
        start_took = time.monotonic() - started
        healthz = await client.get("/healthz")
        unavailable = await dividends(client, netuid=18, hotkey=DEMO_HOTKEY)
        not_ready = await client.get("/readyz")

        async with DevChain(spec=393, port=port) as node:  # the chain comes up later
            seed_demo(node)

            async def answered() -> httpx.Response | None:
                response = await dividends(client, netuid=18, hotkey=DEMO_HOTKEY)
                return response if response.status_code == 200 else None

            recovered = await poll(answered, within_s=30)
            expected = node.dividend(18, DEMO_HOTKEY)

    assert start_took < 5.0 + 2.0  # the connect bound, not a hang
    assert healthz.status_code == 200
    assert unavailable.status_code == 503, unavailable.text
    assert unavailable.json()["error"]["code"] == "chain_unavailable"
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["chain"]["ok"] is False
    assert not_ready.json()["checks"]["redis"]["ok"] is True
    assert recovered.json()["dividend"] == expected
    assert recovered.json()["storage"] == "RootAlphaDividendsPerSubnet"
