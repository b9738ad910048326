"""GET /api/v1/subnets/{netuid}/scores: newest first, scoped through the trades' owner."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.chain import ALICE, BOB
from tests.gateway.conftest import ADMIN, OTHER_TRADER, READER, bearer, owner
from tests.gateway.console.seed import minutes, seed_trade


def url(netuid: int | str) -> str:
    return f"/api/v1/subnets/{netuid}/scores"


async def _seed() -> list[str]:
    """Reader: scores 10, -20, none, 30 on subnet 18 (ALICE, BOB, ALICE, ALICE); one on 3.
    Another caller: 99 on 18."""
    ids = []
    for i, (hotkey, score, backend) in enumerate(
        [(ALICE, 10, "llm"), (BOB, -20, "vader"), (ALICE, None, "none"), (ALICE, 30, "llm")]
    ):
        trade = await seed_trade(
            owner(READER), 18, hotkey, score=score, backend=backend, at=minutes(i)
        )
        ids.append(trade.trade_id)
    await seed_trade(owner(READER), 3, ALICE, score=50, at=minutes(9))
    await seed_trade(owner(OTHER_TRADER), 18, ALICE, score=99, at=minutes(10))
    return ids


async def test_history_of_a_subnet_newest_first_with_backend_and_trade(
    scoped: httpx.AsyncClient,
) -> None:
    ids = await _seed()
    page = (await scoped.get(url(18), headers=bearer(READER))).json()
    assert page["netuid"] == 18 and page["next_cursor"] is None
    items = page["items"]
    assert [i["trade_id"] for i in items] == ids[::-1]
    assert [i["score"] for i in items] == [30, None, -20, 10]  # unscored trades are listed
    assert [i["backend"] for i in items] == ["llm", "none", "vader", "llm"]
    assert items[2]["hotkey"] == BOB and items[0]["trade_status"] == "succeeded"
    assert items[0]["scored_at"].startswith("2026-01-01T12:03:00")


async def test_pages_and_the_hotkey_filter(scoped: httpx.AsyncClient) -> None:
    ids = await _seed()
    first = (await scoped.get(url(18), params={"limit": 3}, headers=bearer(READER))).json()
    assert [i["trade_id"] for i in first["items"]] == ids[:0:-1]
    rest = (
        await scoped.get(
            url(18), params={"limit": 3, "cursor": first["next_cursor"]}, headers=bearer(READER)
        )
    ).json()
    assert [i["trade_id"] for i in rest["items"]] == ids[:1] and rest["next_cursor"] is None
    bob = (await scoped.get(url(18), params={"hotkey": BOB}, headers=bearer(READER))).json()
    assert [i["score"] for i in bob["items"]] == [-20]
    assert (await scoped.get(url(0), headers=bearer(READER))).json()["items"] == []


async def test_owner_scoping_and_admin(scoped: httpx.AsyncClient) -> None:
    await _seed()
    theirs = (await scoped.get(url(18), headers=bearer(OTHER_TRADER))).json()["items"]
    assert [i["score"] for i in theirs] == [99]
    every = (await scoped.get(url(18), headers=bearer(ADMIN))).json()["items"]
    assert [i["score"] for i in every] == [99, 30, None, -20, 10]


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        (url(70000), {}, "netuid"),
        (url("x"), {}, "netuid"),
        (url(18), {"limit": "501"}, "limit"),
        (url(18), {"cursor": "-1"}, "cursor"),
        (url(18), {"hotkey": "0" * 48}, "hotkey"),
    ],
)
async def test_bad_input_is_422(
    scoped: httpx.AsyncClient, path: str, params: dict[str, str], name: str
) -> None:
    response = await scoped.get(path, params=params, headers=bearer(READER))
    assert response.status_code == 422 and name in response.json()["error"]["message"]


async def test_no_token_is_401_and_answers_are_not_cached(scoped: httpx.AsyncClient) -> None:
    assert (await scoped.get(url(18))).status_code == 401
    response = await scoped.get(url(18), headers=bearer(READER))
    assert response.headers["cache-control"] == "no-store"
