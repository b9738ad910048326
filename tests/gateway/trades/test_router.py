"""Trades routes, and one trade from the HTTP request to its stored stake action."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from shared.constants import STREAM_DIVIDEND_REQUESTED
from shared.db.models import StakeAction, Trade
from tests.conftest import AUTH, TEST_SIGNING_KEY, TOKENS
from tests.fakes.chain import ALICE, BOB
from tests.gateway.conftest import ADMIN, OTHER_TRADER, READER, TRADER, bearer, owner


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
        trade = await Trade.create(
            trade_id=f"t{i}", netuid=netuid, hotkey=hotkey, source="api", requested_by=owner(TRADER)
        )
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


class TestOwnership:
    """Trade reads show the caller's own trades; `admin` sees all; another's is a plain 404."""

    async def test_another_tokens_trade_is_404_and_absent_from_stake_actions(
        self, scoped: httpx.AsyncClient
    ) -> None:
        await _seed_actions()  # requested by TRADER
        mine = await Trade.create(
            trade_id="other", netuid=3, hotkey=ALICE, source="api", requested_by=owner(OTHER_TRADER)
        )
        await StakeAction.create(
            trade=mine, netuid=3, hotkey=ALICE, status="failed", direction="add"
        )
        await Trade.create(trade_id="beat", netuid=3, hotkey=ALICE, source="schedule")

        hidden = await scoped.get("/api/v1/trades/t0", headers=bearer(OTHER_TRADER))
        missing = await scoped.get("/api/v1/trades/nope", headers=bearer(OTHER_TRADER))
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        assert hidden.json()["error"]["message"] == "no trade 't0'"
        assert missing.json()["error"]["message"] == "no trade 'nope'"
        own = await scoped.get("/api/v1/trades/other", headers=bearer(OTHER_TRADER))
        assert own.status_code == 200 and own.json()["requested_by"] == owner(OTHER_TRADER)
        assert (await scoped.get("/api/v1/trades/beat", headers=bearer(TRADER))).status_code == 404

        def ids(response: httpx.Response) -> list[str]:
            return [item["trade_id"] for item in response.json()["items"]]

        url = "/api/v1/stake_actions"
        assert ids(await scoped.get(url, headers=bearer(OTHER_TRADER))) == ["other"]
        assert ids(await scoped.get(url, headers=bearer(TRADER))) == ["t4", "t3", "t2", "t1", "t0"]
        assert ids(await scoped.get(url, headers=bearer(READER))) == []

    async def test_admin_sees_every_trade(self, scoped: httpx.AsyncClient) -> None:
        await _seed_actions()
        other = await Trade.create(
            trade_id="other", netuid=3, hotkey=ALICE, source="api", requested_by=owner(OTHER_TRADER)
        )
        await StakeAction.create(
            trade=other, netuid=3, hotkey=ALICE, status="failed", direction="add"
        )
        await Trade.create(trade_id="beat", netuid=3, hotkey=ALICE, source="schedule")
        for trade_id in ("t0", "other", "beat"):
            response = await scoped.get(f"/api/v1/trades/{trade_id}", headers=bearer(ADMIN))
            assert response.status_code == 200 and response.json()["trade_id"] == trade_id
        page = (await scoped.get("/api/v1/stake_actions", headers=bearer(ADMIN))).json()
        assert [i["trade_id"] for i in page["items"]] == ["other", "t4", "t3", "t2", "t1", "t0"]

    async def test_read_token_cannot_post_a_trade(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        body = {"netuid": 3, "hotkey": ALICE}
        for token in (READER, ADMIN):
            response = await scoped.post("/api/v1/trades", json=body, headers=bearer(token))
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "insufficient_scope"
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0
        assert await redis.keys("trade:cooldown:*") == []

    async def test_posted_trade_belongs_to_its_caller(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        response = await scoped.post(
            "/api/v1/trades", json={"netuid": 3, "hotkey": ALICE}, headers=bearer(OTHER_TRADER)
        )
        assert response.status_code == 202
        [(_, fields)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
        assert fields[b"requested_by"].decode() == owner(OTHER_TRADER)


async def test_stored_reasons_are_served_with_secrets_masked(client: httpx.AsyncClient) -> None:
    """A reason is text the pipeline wrote, quoting a node or an outside API: a configured
    secret in it is masked in the answer, as in the logs."""
    leaked = f"chain submit failed: ValueError: wss://node/ws?key={TEST_SIGNING_KEY} refused"
    trade = await Trade.create(
        trade_id="t-secret", netuid=3, hotkey=ALICE, source="api", requested_by=owner(TRADER)
    )
    await Trade.filter(trade_id="t-secret").update(reason=leaked)
    await StakeAction.create(
        trade=trade,
        netuid=3,
        hotkey=ALICE,
        status="failed",
        direction="add",
        reason=leaked,
        message=f"Authorization: Bearer {TOKENS[1]}",
    )
    one = (await client.get("/api/v1/trades/t-secret", headers=AUTH)).json()
    listed = (await client.get("/api/v1/stake_actions", headers=AUTH)).json()
    [action] = listed["items"]
    text = str([one, listed])
    assert TEST_SIGNING_KEY not in text and TOKENS[1] not in text
    assert one["reason"] == action["reason"] == leaked.replace(TEST_SIGNING_KEY, "***")
    assert action["message"].startswith("Authorization: Bearer ***")
