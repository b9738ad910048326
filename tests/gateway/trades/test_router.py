"""Trades routes, and one trade from the HTTP request to its stored stake action."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from shared.constants import STREAM_DIVIDEND_REQUESTED
from shared.db.models import StakeAction, Trade
from tests.conftest import AUTH
from tests.fakes.chain import ALICE, BOB


async def _seed_actions() -> list[str]:
    ids = []
    for i, (netuid, hotkey, status, direction) in enumerate(
        [
            (3, ALICE, "succeeded", "add"),
            (3, BOB, "skipped", "none"),
            (4, ALICE, "failed", "remove"),
            (3, ALICE, "succeeded", "remove"),
            (3, ALICE, "dry_run", "add"),
        ]
    ):
        trade = await Trade.create(trade_id=f"t{i}", netuid=netuid, hotkey=hotkey, source="api")
        await StakeAction.create(
            trade=trade, netuid=netuid, hotkey=hotkey, status=status, direction=direction
        )
        ids.append(trade.trade_id)
    return ids


async def test_stake_actions_filters_and_cursor_pagination(client: httpx.AsyncClient) -> None:
    await _seed_actions()
    url = "/api/v1/stake_actions"
    page = (
        await client.get(url, params={"netuid": 3, "hotkey": ALICE, "limit": 2}, headers=AUTH)
    ).json()
    assert [i["trade_id"] for i in page["items"]] == ["t4", "t3"]
    rest = (
        await client.get(
            url,
            params={"netuid": 3, "hotkey": ALICE, "limit": 2, "cursor": page["next_cursor"]},
            headers=AUTH,
        )
    ).json()
    assert [i["trade_id"] for i in rest["items"]] == ["t0"] and rest["next_cursor"] is None
    failed = (await client.get(url, params={"status": "failed"}, headers=AUTH)).json()
    assert [i["trade_id"] for i in failed["items"]] == ["t2"]
    removes = (await client.get(url, params={"direction": "remove"}, headers=AUTH)).json()
    assert {i["trade_id"] for i in removes["items"]} == {"t2", "t3"}
    bad = await client.get(url, params={"status": "exploded"}, headers=AUTH)
    assert bad.status_code == 422
    assert (await client.get(url, params={"cursor": "abc"}, headers=AUTH)).status_code == 422
    assert (await client.get(url)).status_code == 401


async def test_unknown_trade_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/trades/nope", headers=AUTH)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_manual_trigger_respects_the_cooldown(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    body = {"netuid": 3, "hotkey": ALICE}
    first = await client.post("/api/v1/trades", json=body, headers=AUTH)
    second = await client.post("/api/v1/trades", json=body, headers=AUTH)
    assert first.status_code == 202 and first.json()["stake_tx_triggered"] is True
    assert second.json()["stake_tx_triggered"] is False
    assert second.json()["trade_id"] == first.json()["trade_id"]
    [(_, fields)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
    assert fields[b"source"] == b"manual"
    bad = await client.post("/api/v1/trades", json={"netuid": 3, "hotkey": "x"}, headers=AUTH)
    assert bad.status_code == 422
