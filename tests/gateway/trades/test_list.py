"""GET /api/v1/trades: the caller's trades, newest first, in pages that never split a tie."""

from __future__ import annotations

import httpx
import pytest

from shared.db.models import Trade
from tests.fakes.chain import ALICE, BOB
from tests.gateway.conftest import ADMIN, OTHER_TRADER, READER, bearer, owner
from tests.gateway.console.seed import minutes, seed_trade

URL = "/api/v1/trades"


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["trade_id"] for item in response.json()["items"]]


async def test_newest_first_with_the_stage_status(scoped: httpx.AsyncClient) -> None:
    await seed_trade(owner(READER), 3, ALICE, status="requested", at=minutes(0), trade_id="a")
    await seed_trade(owner(READER), 18, BOB, status="scored", at=minutes(1), trade_id="b")
    response = await scoped.get(URL, headers=bearer(READER))
    assert ids(response) == ["b", "a"]
    newest = response.json()["items"][0]
    assert (newest["netuid"], newest["hotkey"], newest["status"]) == (18, BOB, "scored")
    assert newest["requested_by"] == owner(READER) and response.json()["next_cursor"] is None
    assert response.headers["cache-control"] == "no-store"


async def test_pages_walk_ties_in_created_at_without_loss_or_repeat(
    scoped: httpx.AsyncClient,
) -> None:
    # Five trades at one instant and two later: the cursor carries (created_at, trade_id).
    for name in ["t1", "t2", "t3", "t4", "t5"]:
        await seed_trade(owner(READER), 3, ALICE, at=minutes(0), trade_id=name)
    await seed_trade(owner(READER), 3, ALICE, at=minutes(1), trade_id="u1")
    await seed_trade(owner(READER), 3, ALICE, at=minutes(2), trade_id="u2")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await scoped.get(URL, params=params, headers=bearer(READER))
        seen += ids(response)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["u2", "u1", "t5", "t4", "t3", "t2", "t1"]


async def test_filters(scoped: httpx.AsyncClient) -> None:
    await seed_trade(owner(READER), 3, ALICE, status="succeeded", at=minutes(0), trade_id="a")
    await seed_trade(owner(READER), 18, BOB, status="skipped", at=minutes(1), trade_id="b")
    await seed_trade(owner(READER), 3, BOB, status="succeeded", at=minutes(2), trade_id="c")
    get = scoped.get
    assert ids(await get(URL, params={"netuid": 3}, headers=bearer(READER))) == ["c", "a"]
    assert ids(await get(URL, params={"hotkey": BOB}, headers=bearer(READER))) == ["c", "b"]
    assert ids(await get(URL, params={"status": "skipped"}, headers=bearer(READER))) == ["b"]


async def test_a_caller_sees_its_own_trades_and_admin_sees_all(scoped: httpx.AsyncClient) -> None:
    await seed_trade(owner(READER), 3, ALICE, at=minutes(0), trade_id="mine")
    await seed_trade(owner(OTHER_TRADER), 3, ALICE, at=minutes(1), trade_id="theirs")
    await seed_trade(None, 3, ALICE, at=minutes(2), trade_id="scheduled")
    assert ids(await scoped.get(URL, headers=bearer(READER))) == ["mine"]
    assert ids(await scoped.get(URL, headers=bearer(OTHER_TRADER))) == ["theirs"]
    assert ids(await scoped.get(URL, headers=bearer(ADMIN))) == ["scheduled", "theirs", "mine"]
    assert await Trade.all().count() == 3


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"cursor": "123"}, "cursor"),  # not <microseconds>.<trade_id>
        ({"cursor": "1.a b"}, "cursor"),
        ({"status": "Succeeded!"}, "status"),
        ({"limit": "201"}, "limit"),
        ({"netuid": "-1"}, "netuid"),
        ({"hotkey": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ"}, "hotkey"),
    ],
)
async def test_bad_input_is_422(
    scoped: httpx.AsyncClient, params: dict[str, str], name: str
) -> None:
    response = await scoped.get(URL, params=params, headers=bearer(READER))
    assert response.status_code == 422 and name in response.json()["error"]["message"]


async def test_a_far_cursor_is_an_empty_page_not_an_error(scoped: httpx.AsyncClient) -> None:
    await seed_trade(owner(READER), 3, ALICE, at=minutes(0), trade_id="a")
    early = await scoped.get(URL, params={"cursor": "0.a"}, headers=bearer(READER))
    assert ids(early) == []
    late = await scoped.get(URL, params={"cursor": "9999999999999999.z"}, headers=bearer(READER))
    assert ids(late) == ["a"]
