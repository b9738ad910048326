"""`trade_id` and `stage` are bound through context while a stage handles an entry (and
`request_id` while the gateway serves a request): every line written meanwhile carries them,
however deep it is logged, with no binding at the call site."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.app import create_app
from pipeline.worker import Stage, StreamEntry, Worker
from shared.settings import Settings
from tests.conftest import AUTH, capture_json_records, running_app
from tests.fakes.chain import ALICE, FakeChain
from tests.fakes.staker import FakeStaker
from tests.pipeline.conftest import eventually, running_worker

STREAM = "stream:test_log_context"


@pytest.fixture
def records() -> Iterator[list[dict[str, Any]]]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, event_signing_key=SecretStr("k" * 32)
    )
    yield capture_json_records(settings)
    logger.remove()


async def test_lines_logged_inside_a_handler_carry_trade_and_stage(
    redis: Redis, records: list[dict[str, Any]]
) -> None:
    handled: list[str] = []

    def client_call(netuid: str) -> None:
        logger.bind(netuid=netuid).info("client line")
        logging.getLogger("async_substrate_interface").warning("stdlib sdk line")

    async def background() -> None:
        logger.warning("task line")

    async def handler(entry: StreamEntry) -> None:
        client_call(entry.fields["netuid"])
        await asyncio.create_task(background())
        handled.append(entry.entry_id)

    await redis.xadd(STREAM, {"trade_id": "trade-a", "netuid": "3"})
    await redis.xadd(STREAM, {"trade_id": "trade-b", "netuid": "4"})
    await redis.xadd(STREAM, {"netuid": "5"})  # no trade: stage only
    worker = Worker(
        redis, [Stage("ctx", STREAM, "ctx-group", handler)], block_ms=100, claim_every_s=0.05
    )

    async def all_done() -> bool:
        return len(handled) == 3 and worker.stats["done"] == 3

    task = asyncio.create_task(worker.run())
    try:
        await eventually(all_done)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)

    inside = [r for r in records if r["msg"] in ("client line", "stdlib sdk line", "task line")]
    assert len(inside) == 9
    assert all(r["stage"] == "ctx" for r in inside)
    for trade, netuid in (("trade-a", 3), ("trade-b", 4)):
        lines = [r for r in inside if r.get("trade_id") == trade]
        assert sorted(r["msg"] for r in lines) == ["client line", "stdlib sdk line", "task line"]
        assert next(r for r in lines if r["msg"] == "client line")["netuid"] == str(netuid)
    assert [r["msg"] for r in inside if "trade_id" not in r] == [
        "client line",
        "stdlib sdk line",
        "task line",
    ]
    sdk = next(r for r in inside if r["msg"] == "stdlib sdk line")
    assert sdk["name"] == "async_substrate_interface"
    # the context ends with the handler: the worker's own lines outside it do not carry it
    started = next(r for r in records if r["msg"] == "worker started")
    stopped = next(r for r in records if r["msg"] == "worker stopped")
    assert "trade_id" not in started and "trade_id" not in stopped
    assert "stage" not in started and "stage" not in stopped


async def test_client_lines_of_a_real_trade_carry_its_ids(
    pipeline_settings: Settings, redis: Redis
) -> None:
    """The whole path: the gateway's lines carry the request id; the outside-API clients'
    lines (which bind neither) carry the trade and the stage that called them."""
    app = create_app(pipeline_settings, chain=FakeChain())
    captured = capture_json_records(pipeline_settings)  # after create_app: it sets logging up
    try:
        async with running_app(app) as client, running_worker(pipeline_settings, FakeStaker()):
            response = await client.get(
                "/api/v1/tao_dividends",
                params={"netuid": 3, "hotkey": ALICE, "trade": "true"},
                headers={**AUTH, "X-Request-ID": "req-trade-1"},
            )
            trade_id = response.json()["trade_id"]

            async def settled() -> bool:
                body = (await client.get(f"/api/v1/trades/{trade_id}", headers=AUTH)).json()
                action = body.get("stake_action")
                return bool(action and action["status"] == "succeeded")

            await eventually(settled)
    finally:
        logger.remove()
    access = [r for r in captured if r["msg"].startswith("GET /api/v1/tao_dividends")]
    assert [r.get("request_id") for r in access] == ["req-trade-1"]
    assert [r["name"] for r in access] == ["gateway.middleware"]
    datura = [r for r in captured if r["msg"].startswith("datura search")]
    chutes = [r for r in captured if r["msg"].startswith("chutes completion")]
    assert datura and chutes
    assert all(r.get("trade_id") == trade_id and r.get("stage") == "tweets" for r in datura)
    assert all(r.get("trade_id") == trade_id and r.get("stage") == "sentiment" for r in chutes)
    assert all("request_id" not in r for r in datura + chutes)
