"""gateway.listing: the owner rule, cursors, filters and page cuts of the read routes, and
the shared page dependency behind GET /api/v1/positions and /api/v1/stake_actions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.listing import MAX_ROW_ID, Listing, id_cursor, narrowed, visible_owner
from gateway.scopes import ADMIN as ADMIN_SCOPE
from gateway.scopes import READ, Caller
from shared.db.models import SentimentScore, StakeAction, Trade
from shared.errors import InvalidInput
from shared.ss58 import decode_ss58, encode_ss58
from tests.conftest import make_settings
from tests.fakes.chain import ALICE, BOB
from tests.gateway.conftest import ADMIN, OTHER_TRADER, READER, bearer, owner
from tests.gateway.console.seed import minutes, seed_trade

BAD_CHECKSUM = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ"  # ALICE, last letter changed
READER_CALLER = Caller(owner="reader", scopes=frozenset({READ}))
ADMIN_CALLER = Caller(owner="admin", scopes=frozenset({READ, ADMIN_SCOPE}))


def listing(**fields: Any) -> Listing[int]:
    values: dict[str, Any] = {
        "owner": None,
        "netuid": None,
        "hotkey": None,
        "limit": 50,
        "cursor": None,
    }
    return Listing(**(values | fields))


class TestVisibleOwner:
    def test_a_caller_sees_its_own_rows(self) -> None:
        assert visible_owner(READER_CALLER) == "reader"

    def test_an_admin_sees_every_owners_rows(self) -> None:
        assert visible_owner(ADMIN_CALLER) is None


class TestIdCursor:
    @pytest.mark.parametrize(
        ("cursor", "after"),
        [(None, None), ("0", 0), ("1234", 1234), (str(MAX_ROW_ID), MAX_ROW_ID)],
    )
    def test_the_id_a_page_continues_below(self, cursor: str | None, after: int | None) -> None:
        assert id_cursor(cursor) == after

    def test_a_cursor_beyond_every_row_id_is_the_first_page(self) -> None:
        assert id_cursor(str(MAX_ROW_ID + 1)) is None
        assert id_cursor("9999999999") is None


class TestListingOf:
    def test_owner_from_the_caller_and_the_rest_as_given(self) -> None:
        page = Listing.of(READER_CALLER, netuid=3, hotkey=None, limit=7, cursor=42)
        assert page == Listing(owner="reader", netuid=3, hotkey=None, limit=7, cursor=42)
        admin = Listing.of(ADMIN_CALLER, hotkey=None, limit=7, cursor=None)
        assert (admin.owner, admin.netuid) == (None, None)

    def test_the_hotkey_is_normalized_to_the_generic_format(self) -> None:
        polkadot = encode_ss58(decode_ss58(ALICE), 0)
        assert polkadot != ALICE
        page = Listing.of(READER_CALLER, hotkey=polkadot, limit=1, cursor=None)
        assert page.hotkey == ALICE

    def test_a_hotkey_with_a_bad_checksum_is_invalid_input(self) -> None:
        with pytest.raises(InvalidInput, match="hotkey"):
            Listing.of(READER_CALLER, hotkey=BAD_CHECKSUM, limit=1, cursor=None)


class TestCut:
    def test_one_row_beyond_the_limit_means_a_next_page_after_the_last_row_kept(self) -> None:
        page, next_cursor = listing(limit=2).cut([30, 20, 10], str)
        assert (page, next_cursor) == ([30, 20], "20")

    @pytest.mark.parametrize("rows", [[], [30], [30, 20]])
    def test_no_row_beyond_the_limit_is_the_last_page(self, rows: list[int]) -> None:
        assert listing(limit=2).cut(rows, str) == (rows, None)

    def test_a_whole_list_is_cut_to_its_first_page(self) -> None:
        page, next_cursor = listing(limit=2).cut([50, 40, 30, 20, 10], lambda n: f"<{n}>")
        assert (page, next_cursor) == ([50, 40], "<40>")


async def _seed_rows() -> None:
    """Reader: (3, ALICE), (3, BOB), (18, ALICE); another caller: (3, ALICE); each trade,
    named by its id, with a score and a stake action, in this order."""
    trades = {
        "r3a": (owner(READER), 3, ALICE),
        "r3b": (owner(READER), 3, BOB),
        "r18a": (owner(READER), 18, ALICE),
        "o3a": (owner(OTHER_TRADER), 3, ALICE),
    }
    for i, (name, (who, netuid, hotkey)) in enumerate(trades.items()):
        await seed_trade(who, netuid, hotkey, score=i, action={}, at=minutes(i), trade_id=name)


def trade_ids(rows: list[Any]) -> set[str]:
    return {row.trade_id for row in rows}


class TestScoped:
    """On the real database (the app's lifespan opens it)."""

    async def test_owner_netuid_and_hotkey_through_the_trade(
        self, scoped: httpx.AsyncClient
    ) -> None:
        await _seed_rows()
        mine = listing(owner=owner(READER))
        assert trade_ids(await mine.scoped(StakeAction.all())) == {"r3a", "r3b", "r18a"}
        narrow = listing(owner=owner(READER), netuid=3, hotkey=ALICE)
        assert trade_ids(await narrow.scoped(StakeAction.all())) == {"r3a"}
        everyone = listing(netuid=3, hotkey=ALICE)
        assert trade_ids(await everyone.scoped(StakeAction.all())) == {"r3a", "o3a"}

    async def test_field_names_for_where_a_model_keeps_owner_and_hotkey(
        self, scoped: httpx.AsyncClient
    ) -> None:
        await _seed_rows()
        page = listing(owner=owner(READER), hotkey=BOB)
        trades = await page.scoped(Trade.all(), owner_field="requested_by")
        assert trade_ids(trades) == {"r3b"}
        scores = await page.scoped(SentimentScore.all(), hotkey_field="trade__hotkey")
        assert trade_ids(scores) == {"r3b"}

    async def test_extra_filters_apply_and_none_matches_any(
        self, scoped: httpx.AsyncClient
    ) -> None:
        await _seed_rows()
        newest = await StakeAction.get(trade_id="o3a")
        page = listing()
        below = await page.scoped(StakeAction.all(), id__lt=newest.id, status=None)
        assert trade_ids(below) == {"r3a", "r3b", "r18a"}
        assert await page.scoped(StakeAction.all(), status="failed").count() == 0


class TestNarrowed:
    async def test_only_given_values_filter(self, scoped: httpx.AsyncClient) -> None:
        await _seed_rows()
        assert trade_ids(await narrowed(Trade.all(), requested_by=None, netuid=None)) == {
            "r3a",
            "r3b",
            "r18a",
            "o3a",
        }
        assert trade_ids(await narrowed(Trade.all(), requested_by=None, netuid=18)) == {"r18a"}
        other = narrowed(Trade.filter(trade_id="o3a"), requested_by=owner(READER))
        assert await other.first() is None


@pytest.mark.parametrize("path", ["/api/v1/positions", "/api/v1/stake_actions"])
class TestIdListingRoutes:
    """The page dependency as the routes that use it answer."""

    async def test_the_token_answers_before_the_hotkey(
        self, scoped: httpx.AsyncClient, path: str
    ) -> None:
        response = await scoped.get(path, params={"hotkey": BAD_CHECKSUM})
        assert response.status_code == 401
        response = await scoped.get(path, params={"hotkey": BAD_CHECKSUM}, headers=bearer(READER))
        assert response.status_code == 422 and "hotkey" in response.json()["error"]["message"]

    async def test_owner_scoped_pages_walk_every_row_once(
        self, scoped: httpx.AsyncClient, path: str
    ) -> None:
        await _seed_rows()
        key = "positions" if path.endswith("positions") else "items"

        async def walk(token: str) -> list[tuple[int, str]]:
            seen, cursor = [], None
            for _ in range(10):
                params = {"limit": 1, "chain": "false"} | ({"cursor": cursor} if cursor else {})
                body = (await scoped.get(path, params=params, headers=bearer(token))).json()
                seen += [(item["netuid"], item["hotkey"]) for item in body[key]]
                cursor = body["next_cursor"]
                if cursor is None:
                    return seen
            raise AssertionError("more pages than rows")

        assert await walk(READER) == [(18, ALICE), (3, BOB), (3, ALICE)]
        assert len(await walk(ADMIN)) == (3 if key == "positions" else 4)

    async def test_a_cursor_beyond_every_row_id_is_the_first_page(
        self, scoped: httpx.AsyncClient, path: str
    ) -> None:
        await _seed_rows()
        first = await scoped.get(path, params={"chain": "false"}, headers=bearer(READER))
        beyond = await scoped.get(
            path, params={"chain": "false", "cursor": "9999999999"}, headers=bearer(READER)
        )
        assert first.status_code == beyond.status_code == 200
        assert first.json() == beyond.json() and first.json()["next_cursor"] is None


def test_the_listing_routes_declare_their_filters_alike() -> None:
    document = create_app(make_settings("redis://127.0.0.1:1/0", "sqlite://:memory:")).openapi()

    def params(path: str) -> dict[str, Any]:
        return {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}

    positions, actions = params("/api/v1/positions"), params("/api/v1/stake_actions")
    trades, scores = params("/api/v1/trades"), params("/api/v1/subnets/{netuid}/scores")
    for name in ("netuid", "hotkey", "limit", "cursor"):
        assert positions[name] == actions[name], name
    assert trades["netuid"] == positions["netuid"] and trades["limit"] == positions["limit"]
    assert trades["hotkey"] == positions["hotkey"] and scores["cursor"] == positions["cursor"]
    assert scores["hotkey"]["description"].startswith("Only trades of this hotkey. SS58")
    assert positions["hotkey"]["description"].startswith("Hotkey. SS58")
