"""GET /api/v1/streams: counts per stream and group, and the dead-letter count, with `read`."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from shared.constants import (
    GROUP_TWEETS,
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_STAKE_EXECUTED,
)
from tests.gateway.conftest import READER, bearer

URL = "/api/v1/streams"


async def test_before_any_stream_exists(scoped: httpx.AsyncClient) -> None:
    body = (await scoped.get(URL, headers=bearer(READER))).json()
    assert body["dead_letters"] == 0
    rows = {row["stream"]: row for row in body["streams"]}
    assert rows[STREAM_DIVIDEND_REQUESTED] == {
        "stream": STREAM_DIVIDEND_REQUESTED,
        "length": 0,
        "last_id": "-",
        "group": GROUP_TWEETS,
        "consumers": None,
        "pending": None,
        "lag": None,
        "oldest_pending_idle_s": None,
    }
    assert len(rows) == 5


async def test_lag_pending_and_dead_letters(scoped: httpx.AsyncClient, redis: Redis) -> None:
    await redis.xgroup_create(STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, id="0", mkstream=True)
    for i in range(3):
        await redis.xadd(STREAM_DIVIDEND_REQUESTED, {"n": str(i)})
    await redis.xreadgroup(GROUP_TWEETS, "c1", {STREAM_DIVIDEND_REQUESTED: ">"}, count=1)
    await redis.xadd(STREAM_STAKE_EXECUTED, {"n": "1"})
    await redis.xadd(STREAM_DEAD_LETTER, {"error": "<b>boom</b>", "trade_id": "secret-ish"})
    response = await scoped.get(URL, headers=bearer(READER))
    body = response.json()
    rows = {(row["stream"], row["group"]): row for row in body["streams"]}
    tweets = rows[(STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS)]
    assert (tweets["length"], tweets["consumers"], tweets["pending"], tweets["lag"]) == (3, 1, 1, 2)
    assert tweets["oldest_pending_idle_s"] is not None and tweets["oldest_pending_idle_s"] >= 0
    assert rows[(STREAM_STAKE_EXECUTED, None)]["length"] == 1
    assert body["dead_letters"] == 1
    assert "boom" not in response.text and "secret-ish" not in response.text  # counts only
    assert response.headers["cache-control"] == "no-store"


async def test_no_token_is_401(scoped: httpx.AsyncClient) -> None:
    response = await scoped.get(URL)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
