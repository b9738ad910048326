"""GET /api/v1/positions: totals from stored stake actions, owner scoping, history, pages, and
the current stake from the chain where the chain client can read it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.app import create_app
from shared.chain import StakeEntry, StakeSnapshot
from shared.errors import ChainBadResponse, ChainError, ChainTimeout
from tests.conftest import make_settings, running_app
from tests.devchain import FIXTURES_HINT, DevChain, fixtures_dir
from tests.fakes.chain import ALICE, BOB, DEFAULT_HOTKEY, FakeChain
from tests.gateway.conftest import (
    ADMIN,
    OTHER_TRADER,
    READER,
    SCOPED_ENTRIES,
    TRADER,
    bearer,
    owner,
)
from tests.gateway.console.seed import COLDKEY, minutes, seed_trade

URL = "/api/v1/positions"
OTHER_COLDKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


class StakingChain(FakeChain):
    """The fake chain with the optional `StakeReader` read."""

    def __init__(self, stakes: dict[tuple[str, str, int], int] | None = None) -> None:
        super().__init__()
        self.stakes = stakes or {}
        self.stake_reads: list[list[str]] = []
        self.stake_error: ChainError | None = None
        self.stake_stall = False

    async def coldkey_stakes(self, coldkeys: Sequence[str]) -> StakeSnapshot:
        self.stake_reads.append(list(coldkeys))
        if self.stake_stall:
            await asyncio.Event().wait()
        if self.stake_error is not None:
            raise self.stake_error
        entries = [
            StakeEntry(cold, hot, netuid, rao)
            for (cold, hot, netuid), rao in sorted(self.stakes.items())
            if cold in coldkeys
        ]
        return StakeSnapshot(entries, self.block, f"0x{self.block:064x}")


@pytest.fixture
async def staking(
    redis_url: str, clean_db: str, redis: Redis
) -> AsyncIterator[tuple[httpx.AsyncClient, StakingChain]]:
    chain = StakingChain({(COLDKEY, ALICE, 3): 2_500_000_000, (COLDKEY, BOB, 3): 7})
    settings = make_settings(
        redis_url, clean_db, api_tokens=SecretStr(",".join(SCOPED_ENTRIES)), chain_timeout_s=0.3
    )
    async with running_app(create_app(settings, chain=chain)) as client:
        yield client, chain


async def _alice_on_3(who: str) -> None:
    """Five actions on (3, ALICE): two adds and a remove succeeded, a failure, a skip."""
    actions: list[dict[str, Any]] = [
        {"amount_tao": Decimal("1"), "block": 10, "fee_rao": 100, "stake_before_rao": 0},
        {"amount_tao": Decimal("0.5"), "block": 20, "fee_rao": 100, "extrinsic_hash": "0xab"},
        {
            "direction": "remove",
            "amount_tao": Decimal("0.3"),
            "amount_alpha": Decimal("6"),
            "block": 30,
            "fee_rao": 50,
            "stake_before_rao": 30_000_000_000,
        },
        {"status": "failed", "success": False, "amount_tao": Decimal("1"), "fee_rao": 7},
        {"status": "skipped", "direction": "none", "success": None, "reason": "dead band"},
    ]
    for i, action in enumerate(actions):
        await seed_trade(owner(who), 3, ALICE, action=action, at=minutes(i))


async def test_totals_come_from_succeeded_actions_only(scoped: httpx.AsyncClient) -> None:
    await _alice_on_3(READER)
    page = (await scoped.get(URL, headers=bearer(READER))).json()
    [position] = page["positions"]
    assert (position["netuid"], position["hotkey"]) == (3, ALICE)
    assert (position["actions"], position["succeeded"]) == (5, 3)
    assert position["tao_staked"] == "1.500000000"
    assert position["alpha_unstaked"] == "6.000000000"
    assert position["tao_unstaked_at_decision"] == "0.300000000"
    assert position["net_staked_tao"] == "1.200000000"
    assert position["fees_rao"] == 257  # a failed extrinsic pays its fee too
    assert position["coldkeys"] == [COLDKEY]
    last = position["last_action"]
    assert (last["status"], last["direction"], last["reason"]) == ("skipped", "none", "dead band")
    history = position["history"]
    assert [p["block"] for p in history] == [30, 20, 10]  # newest first, succeeded only
    assert [p["net_staked_tao_after"] for p in history] == [
        "1.200000000",
        "1.500000000",
        "1.000000000",
    ]
    assert history[0]["chain_stake_before_alpha"] == "30.000000000"
    assert history[1]["extrinsic_hash"] == "0xab"
    # The fake chain of this app cannot read stakes: said, not guessed.
    assert page["chain"]["status"] == "unsupported"
    assert position["chain_stake_alpha"] is None and position["chain_stakes"] == []


async def test_history_is_bounded_by_the_parameter(scoped: httpx.AsyncClient) -> None:
    await _alice_on_3(READER)
    one = (await scoped.get(URL, params={"history": 1}, headers=bearer(READER))).json()
    assert [p["block"] for p in one["positions"][0]["history"]] == [30]
    none = (await scoped.get(URL, params={"history": 0}, headers=bearer(READER))).json()
    assert none["positions"][0]["history"] == []
    assert none["positions"][0]["net_staked_tao"] == "1.200000000"


class TestOwnerScoping:
    async def test_a_caller_sees_only_positions_of_its_own_trades(
        self, scoped: httpx.AsyncClient
    ) -> None:
        await _alice_on_3(READER)
        await seed_trade(owner(OTHER_TRADER), 3, ALICE, action={"amount_tao": Decimal("4")})
        await seed_trade(owner(OTHER_TRADER), 18, DEFAULT_HOTKEY, action={"amount_tao": 1})
        mine = (await scoped.get(URL, headers=bearer(READER))).json()["positions"]
        assert [(p["netuid"], p["net_staked_tao"]) for p in mine] == [(3, "1.200000000")]
        theirs = (await scoped.get(URL, headers=bearer(OTHER_TRADER))).json()["positions"]
        assert {(p["netuid"], p["net_staked_tao"]) for p in theirs} == {
            (3, "4.000000000"),
            (18, "1.000000000"),
        }
        nobody = (await scoped.get(URL, headers=bearer(TRADER))).json()
        assert nobody["positions"] == [] and nobody["chain"]["status"] == "no_coldkey"

    async def test_admin_sees_every_callers_actions_summed(self, scoped: httpx.AsyncClient) -> None:
        await _alice_on_3(READER)
        await seed_trade(owner(OTHER_TRADER), 3, ALICE, action={"amount_tao": Decimal("4")})
        await seed_trade(None, 3, ALICE, action={"amount_tao": Decimal("1")})  # the schedule's
        [position] = (await scoped.get(URL, headers=bearer(ADMIN))).json()["positions"]
        assert position["net_staked_tao"] == "6.200000000" and position["actions"] == 7


async def test_pages_are_ordered_by_latest_action_and_do_not_overlap(
    scoped: httpx.AsyncClient,
) -> None:
    for i, (netuid, hotkey) in enumerate([(3, ALICE), (3, BOB), (18, ALICE), (3, ALICE)]):
        await seed_trade(owner(READER), netuid, hotkey, action={"amount_tao": 1}, at=minutes(i))
    first = (await scoped.get(URL, params={"limit": 2}, headers=bearer(READER))).json()
    assert [(p["netuid"], p["hotkey"]) for p in first["positions"]] == [(3, ALICE), (18, ALICE)]
    assert first["next_cursor"] is not None
    rest = (
        await scoped.get(
            URL, params={"limit": 2, "cursor": first["next_cursor"]}, headers=bearer(READER)
        )
    ).json()
    assert [(p["netuid"], p["hotkey"]) for p in rest["positions"]] == [(3, BOB)]
    assert rest["next_cursor"] is None
    only = (await scoped.get(URL, params={"hotkey": BOB}, headers=bearer(READER))).json()
    assert [p["hotkey"] for p in only["positions"]] == [BOB]
    subnet = (await scoped.get(URL, params={"netuid": 18}, headers=bearer(READER))).json()
    assert [p["netuid"] for p in subnet["positions"]] == [18]
    beyond = await scoped.get(URL, params={"cursor": "9999999999"}, headers=bearer(READER))
    assert len(beyond.json()["positions"]) == 3  # past every id: the first page


class TestChainStake:
    async def test_the_current_stake_is_read_once_per_page_and_matched_to_positions(
        self, staking: tuple[httpx.AsyncClient, StakingChain]
    ) -> None:
        client, chain = staking
        await _alice_on_3(READER)
        await seed_trade(owner(READER), 3, BOB, action={"amount_tao": 1, "coldkey": COLDKEY})
        await seed_trade(
            owner(READER), 18, ALICE, action={"amount_tao": 1, "coldkey": OTHER_COLDKEY}
        )
        page = (await client.get(URL, headers=bearer(READER))).json()
        assert chain.stake_reads == [sorted([COLDKEY, OTHER_COLDKEY])]
        assert page["chain"] == {
            "status": "ok",
            "error_code": None,
            "message": None,
            "block": chain.block,
        }
        held = {(p["netuid"], p["hotkey"]): p for p in page["positions"]}
        assert held[(3, ALICE)]["chain_stake_alpha"] == "2.500000000"
        assert held[(3, ALICE)]["chain_stakes"] == [
            {"coldkey": COLDKEY, "stake_alpha": "2.500000000", "stake_rao": 2_500_000_000}
        ]
        assert held[(3, BOB)]["chain_stake_alpha"] == "0.000000007"
        assert held[(18, ALICE)]["chain_stake_alpha"] == "0.000000000"  # nothing held there

    async def test_chain_false_reads_nothing(
        self, staking: tuple[httpx.AsyncClient, StakingChain]
    ) -> None:
        client, chain = staking
        await _alice_on_3(READER)
        page = (await client.get(URL, params={"chain": "false"}, headers=bearer(READER))).json()
        assert page["chain"]["status"] == "not_requested" and chain.stake_reads == []
        assert page["positions"][0]["chain_stake_alpha"] is None

    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (ChainTimeout("chain did not answer coldkey_stakes within 0.3s"), "chain_timeout"),
            (ChainBadResponse("bad answer"), "chain_bad_response"),
        ],
    )
    async def test_a_failing_chain_is_reported_and_the_records_still_answer(
        self, staking: tuple[httpx.AsyncClient, StakingChain], error: ChainError, code: str
    ) -> None:
        client, chain = staking
        await _alice_on_3(READER)
        chain.stake_error = error
        response = await client.get(URL, headers=bearer(READER))
        assert response.status_code == 200
        page = response.json()
        assert page["chain"]["status"] == "error" and page["chain"]["error_code"] == code
        assert page["positions"][0]["net_staked_tao"] == "1.200000000"
        assert page["positions"][0]["chain_stake_alpha"] is None

    async def test_a_stalled_chain_read_is_cut_at_the_chain_timeout(
        self, staking: tuple[httpx.AsyncClient, StakingChain]
    ) -> None:
        client, chain = staking
        await _alice_on_3(READER)
        chain.stake_stall = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        page = (await client.get(URL, headers=bearer(READER))).json()
        assert loop.time() - started < 2.0  # CHAIN_TIMEOUT_S is 0.3 here
        assert (page["chain"]["status"], page["chain"]["error_code"]) == ("error", "chain_timeout")

    async def test_more_coldkeys_than_a_page_may_read_are_not_read(
        self, staking: tuple[httpx.AsyncClient, StakingChain]
    ) -> None:
        client, chain = staking
        for i in range(9):
            await seed_trade(owner(READER), i, ALICE, action={"coldkey": f"cold-{i}"})
        page = (await client.get(URL, headers=bearer(READER))).json()
        assert page["chain"]["status"] == "too_many_coldkeys" and chain.stake_reads == []
        assert "netuid" in page["chain"]["message"]
        small = (await client.get(URL, params={"limit": 8}, headers=bearer(READER))).json()
        assert small["chain"]["status"] == "ok" and len(chain.stake_reads[0]) == 8


class TestErrors:
    @pytest.mark.parametrize(
        "params",
        [
            {"netuid": "70000"},
            {"hotkey": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ"},  # checksum
            {"history": "101"},
            {"limit": "0"},
            {"cursor": "12a"},
            {"chain": "maybe"},
        ],
    )
    async def test_bad_parameters_are_422_naming_them(
        self, scoped: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        response = await scoped.get(URL, params=params, headers=bearer(READER))
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error" and next(iter(params)) in error["message"]

    async def test_no_token_is_401_and_answers_are_not_cached(
        self, scoped: httpx.AsyncClient
    ) -> None:
        missing = await scoped.get(URL)
        assert missing.status_code == 401 and missing.headers["www-authenticate"]
        ok = await scoped.get(URL, headers=bearer(READER))
        assert ok.headers["cache-control"] == "no-store"


@pytest.mark.devchain
@pytest.mark.skipif(fixtures_dir() is None, reason=FIXTURES_HINT)
async def test_the_gateway_reads_the_coldkeys_stake_from_the_simulated_node(
    redis_url: str, clean_db: str, redis: Redis
) -> None:
    """The real `SubtensorChain.coldkey_stakes` (bittensor's StakeInfoRuntimeApi) on the node."""
    async with DevChain(spec=393) as node:
        node.add_subnet(3, price_tao=0.5)
        node.add_subnet(18, price_tao=0.05)
        node.set_stake(COLDKEY, ALICE, 3, 2_500_000_000)
        node.set_stake(COLDKEY, ALICE, 18, 40_000_000_000)  # another position, not on the page
        node.set_stake(OTHER_COLDKEY, ALICE, 3, 9)  # another wallet: not summed
        node.seal_block()
        settings = make_settings(
            redis_url,
            clean_db,
            api_tokens=SecretStr(",".join(SCOPED_ENTRIES)),
            bittensor_network=node.url,
            chain_timeout_s=3.0,
            chain_connect_timeout_s=10.0,
        )
        async with running_app(create_app(settings)) as client:
            await _alice_on_3(READER)
            page = (await client.get(URL, headers=bearer(READER))).json()
    assert page["chain"]["status"] == "ok" and page["chain"]["block"] == node.head.number
    [position] = page["positions"]
    assert position["chain_stake_alpha"] == "2.500000000"
    assert position["chain_stakes"] == [
        {"coldkey": COLDKEY, "stake_alpha": "2.500000000", "stake_rao": 2_500_000_000}
    ]
