"""One trade from the HTTP request to its stored stake action and stake_executed event:
the real app and the real stage worker in one process, real Redis and PostgreSQL."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.app import create_app
from gateway.scopes import static_owner
from shared.constants import STREAM_STAKE_EXECUTED
from shared.settings import Settings
from tests.conftest import AUTH, TOKENS, running_app
from tests.fakes.chain import ALICE, FakeChain
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import eventually, running_worker


async def test_a_trade_from_the_http_request_to_its_stake_action(
    pipeline_settings: Settings,
    redis: Redis,
) -> None:
    staker = FakeStaker()
    app = create_app(pipeline_settings, chain=FakeChain())
    async with running_app(app) as client, running_worker(pipeline_settings, staker):
        response = await client.get(
            "/api/v1/tao_dividends",
            params={"netuid": 3, "hotkey": ALICE, "trade": "true"},
            headers=AUTH,
        )
        trade_id = response.json()["trade_id"]
        assert response.json()["stake_tx_triggered"] is True

        async def settled() -> dict[str, object] | None:
            body = (await client.get(f"/api/v1/trades/{trade_id}", headers=AUTH)).json()
            action = body.get("stake_action")
            return body if action and action["status"] == "succeeded" else None

        trade = await eventually(settled)
    assert trade["source"] == "api" and trade["requested_by"] == static_owner(TOKENS[0])
    assert trade["tweets"]["count"] > 0 and trade["sentiment"]["backend"] == "llm"
    assert trade["stake_action"]["direction"] == "add"
    assert trade["stake_action"]["amount_tao"] == "1.000000000"
    assert staker.extrinsics == [("add", 3, ALICE, 1_000_000_000)]
    [(_, fields)] = await redis.xrange(STREAM_STAKE_EXECUTED)
    assert fields[b"trade_id"].decode() == trade_id
