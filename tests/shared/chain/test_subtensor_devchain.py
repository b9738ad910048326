"""Contract of `shared.chain.SubtensorChain` (and, for now, raw SDK staking) against DevChain.

The real bittensor 10.5 `AsyncSubtensor` talks websocket JSON-RPC to the simulated
node serving recorded finney metadata, so metadata decoding, storage keys, paging,
signing and event decoding are the SDK's own. Skipped when the fixtures are absent.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shared.chain import STORAGE_UNITS, DividendEntry, DividendSnapshot, SubtensorChain
from shared.errors import ChainError, ChainTimeout, ChainUnavailable, StorageUnsupported
from shared.settings import Settings
from tests.devchain import FIXTURES_HINT, SPECS, DevChain, fixtures_dir, free_port
from tests.devchain.seed import DEMO_HOTKEY, synthetic_hotkey

# Must be set before bittensor is imported: the MEV-shield path cannot run on a plain node.
os.environ["BT_MEV_PROTECTION"] = "0"

pytestmark = [
    pytest.mark.devchain,
    pytest.mark.skipif(fixtures_dir() is None, reason=FIXTURES_HINT),
]

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
NATIVE_STORAGE = {315: "TaoDividendsPerSubnet", 393: "RootAlphaDividendsPerSubnet"}
MISSING_STORAGE = {315: "RootAlphaDividendsPerSubnet", 393: "TaoDividendsPerSubnet"}
RAO = 10**9
T = TypeVar("T")


@pytest.fixture(params=SPECS, ids=lambda spec: f"spec{spec}")
async def node(request: pytest.FixtureRequest) -> AsyncIterator[DevChain]:
    async with DevChain(spec=request.param) as chain_node:
        yield chain_node


@pytest.fixture
async def node393() -> AsyncIterator[DevChain]:
    async with DevChain(spec=393) as chain_node:
        yield chain_node


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bittensor_network": url,
        "chain_timeout_s": 3.0,
        # A connect decodes the runtime metadata (~0.5 s of CPU, more on a loaded machine).
        "chain_connect_timeout_s": 15.0,
        "chain_retry_max_s": 0.5,
        "dividends_storage": "auto",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def connected(
    url: str, *, warm: bool = True, **overrides: Any
) -> AsyncIterator[SubtensorChain]:
    """A started SubtensorChain; `warm` waits until the SDK has decoded the metadata.

    `AsyncSubtensor.initialize()` leaves the metadata download and decode (~0.5 s of CPU)
    running in a task that the first read awaits. Tests about other things wait for it
    first, shielded, so a short CHAIN_TIMEOUT_S on a loaded machine does not cancel it
    (see test_slow_metadata_at_start_does_not_wedge_reads for that case).
    """
    chain = SubtensorChain(settings_for(url, **overrides))
    await chain.start()
    try:
        assert chain.connected, "SubtensorChain did not connect to the devchain"
        if warm:

            async def runtime_loaded(subtensor: Any) -> None:
                task = subtensor.substrate.startup_runtime_task
                if task is not None:
                    await asyncio.shield(task)

            await eventually(lambda: chain.call("warm-up", runtime_loaded), within_s=30)
        yield chain
    finally:
        await chain.close()


async def eventually(read: Callable[[], Awaitable[T]], within_s: float = 8.0) -> T:
    """Retry a read that may fail while the module reconnects in the background."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await read()
        except ChainError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def as_dict(snapshot: DividendSnapshot) -> dict[tuple[int, str], int]:
    return {(e.netuid, e.hotkey): e.dividend for e in snapshot.entries}


def seed(node: DevChain) -> dict[tuple[int, str], int]:
    """Subnets 0, 3, 18 with dividends; netuid 7 has an entry but is not a subnet."""
    expected = {
        (0, ALICE): 11,
        (3, ALICE): 123_456_789,
        (3, BOB): 7,
        (18, DEMO_HOTKEY): 42 * RAO,
    }
    for netuid in (0, 3, 18):
        node.add_subnet(netuid)
    for (netuid, hotkey), amount in expected.items():
        node.set_dividend(netuid, hotkey, amount)
    node.set_dividend(7, ALICE, 999)
    return expected


# ====================================================================== reads
class TestReads:
    async def test_one_entry_reads_the_stored_value_and_names_storage_and_unit(
        self, node: DevChain
    ) -> None:
        seed(node)
        async with connected(node.url) as chain:
            snapshot = await chain.dividend(3, ALICE)
            missing = await chain.dividend(3, DEMO_HOTKEY)
            root = await chain.dividend(0, ALICE)

        assert snapshot.entries == [DividendEntry(3, ALICE, 123_456_789)]
        assert snapshot.storage == NATIVE_STORAGE[node.spec] == node.dividend_storage
        assert snapshot.unit == STORAGE_UNITS[NATIVE_STORAGE[node.spec]]
        assert (snapshot.block, snapshot.block_hash) == (node.head.number, node.head.hash)
        assert missing.entries == [DividendEntry(3, DEMO_HOTKEY, 0)]
        assert root.entries == [DividendEntry(0, ALICE, 11)]

    async def test_one_netuid_pages_through_every_hotkey(self, node: DevChain) -> None:
        node.add_subnet(18)
        amounts = {synthetic_hotkey(f"page-{i}"): 1_000 + i for i in range(1_250)}
        node.set_dividends(18, amounts)
        node.set_dividend(3, ALICE, 5)  # another subnet's entry must not leak in
        async with connected(node.url) as chain:
            node.reset_counts()
            snapshot = await chain.subnet_dividends(18)

        assert {e.hotkey: e.dividend for e in snapshot.entries} == amounts
        assert {e.netuid for e in snapshot.entries} == {18}
        # 1250 keys in pages of 1000: a full page, then a short one that ends the map.
        assert node.rpc_counts["state_getKeysPaged"] == 2
        assert node.rpc_counts["state_queryStorageAt"] == 2

    async def test_all_subnets_reads_every_added_subnet(self, node: DevChain) -> None:
        expected = seed(node)
        async with connected(node.url) as chain:
            snapshot = await chain.all_dividends()

        assert as_dict(snapshot) == expected  # netuid 7 is not in NetworksAdded
        assert snapshot.storage == NATIVE_STORAGE[node.spec]
        assert snapshot.block == node.head.number

    async def test_all_subnets_is_read_at_one_pinned_block(self, node393: DevChain) -> None:
        node = node393
        expected = seed(node)
        pinned = node.head.hash
        async with connected(node.url) as chain:
            node.delay(0.1, "state_getKeysPaged")
            read = asyncio.create_task(chain.all_dividends())
            while node.rpc_counts["state_getKeysPaged"] == 0:
                await asyncio.sleep(0.005)
            node.seal_block()  # a new head; changes below land only there
            node.set_dividend(3, ALICE, 1)
            node.add_subnet(9)
            node.set_dividend(9, BOB, 2)
            snapshot = await read
            node.delay(0)
            later = await chain.all_dividends()

        assert snapshot.block_hash == pinned
        assert as_dict(snapshot) == expected
        assert later.block_hash == node.head.hash != pinned
        assert as_dict(later) == {**expected, (3, ALICE): 1, (9, BOB): 2}

    async def test_dividends_storage_override_is_honoured(self, node: DevChain) -> None:
        seed(node)
        native = NATIVE_STORAGE[node.spec]
        node.set_dividend(3, ALICE, 555, storage="AlphaDividendsPerSubnet")
        async with connected(node.url, dividends_storage=native) as chain:
            snapshot = await chain.dividend(3, ALICE)

        assert snapshot.storage == native
        assert snapshot.entries == [DividendEntry(3, ALICE, 123_456_789)]

    async def test_forcing_the_missing_storage_is_storage_unsupported(self, node: DevChain) -> None:
        seed(node)
        forced = MISSING_STORAGE[node.spec]
        async with connected(node.url, dividends_storage=forced) as chain:
            reads: list[Callable[[], Awaitable[DividendSnapshot]]] = [
                lambda: chain.dividend(3, ALICE),
                lambda: chain.subnet_dividends(3),
                chain.all_dividends,
            ]
            for read in reads:
                with pytest.raises(StorageUnsupported, match=forced):
                    await read()
            assert chain.connected  # a configuration error, not a broken connection
        assert node.rpc_counts["state_getStorageAt"] == 0


# ====================================================================== faults
class TestFaults:
    async def test_stalled_node_gives_chain_timeout_within_the_bound(
        self, node393: DevChain
    ) -> None:
        node = node393
        seed(node)
        async with connected(node.url, chain_timeout_s=0.5) as chain:
            node.stall()
            started = time.monotonic()
            with pytest.raises(ChainTimeout):
                await chain.dividend(3, ALICE)
            elapsed = time.monotonic() - started
            node.unstall()
            recovered = await eventually(lambda: chain.dividend(3, ALICE))

        assert 0.45 <= elapsed < 0.5 + 0.75  # the configured bound, plus scheduling slack
        assert recovered.entries == [DividendEntry(3, ALICE, 123_456_789)]

    async def test_dropped_connection_is_survived_on_a_later_call(self, node393: DevChain) -> None:
        node = node393
        seed(node)
        async with connected(node.url) as chain:
            await chain.dividend(3, ALICE)
            assert await node.drop_connections() == 1
            node.set_dividend(3, ALICE, 8)
            snapshot = await eventually(lambda: chain.dividend(3, ALICE))

        assert snapshot.entries == [DividendEntry(3, ALICE, 8)]
        assert node.connections_total >= 2

    async def test_connection_dropped_mid_request_is_survived(self, node393: DevChain) -> None:
        node = node393
        seed(node)
        async with connected(node.url) as chain:
            node.drop_on("state_queryStorageAt")
            snapshot = await eventually(lambda: chain.subnet_dividends(3))

        assert as_dict(snapshot) == {(3, ALICE): 123_456_789, (3, BOB): 7}
        assert node.connections_total >= 2

    async def test_clean_close_is_survived(self, node393: DevChain) -> None:
        node = node393
        seed(node)
        async with connected(node.url, chain_timeout_s=1.0) as chain:
            await chain.dividend(3, ALICE)
            assert await node.close_connections() == 1
            snapshot = await eventually(lambda: chain.dividend(3, ALICE))

        assert snapshot.entries == [DividendEntry(3, ALICE, 123_456_789)]

    async def test_node_internal_error_on_a_map_read_is_a_chain_error(
        self, node393: DevChain
    ) -> None:
        node = node393
        seed(node)
        async with connected(node.url) as chain:
            node.error_on("state_getKeysPaged")
            with pytest.raises(ChainError) as caught:
                await chain.subnet_dividends(3)
            assert node.open_connections == 1  # answered with a JSON-RPC error, not dropped
            snapshot = await chain.subnet_dividends(3)

        assert caught.value.code == "chain_bad_response"
        assert as_dict(snapshot) == {(3, ALICE): 123_456_789, (3, BOB): 7}

    async def test_node_internal_error_on_a_single_read_is_a_chain_error(
        self, node393: DevChain
    ) -> None:
        node = node393
        seed(node)
        async with connected(node.url) as chain:
            node.error_on("state_getStorageAt")
            node.error_on("state_queryStorageAt")
            with pytest.raises(ChainError):
                await chain.dividend(3, ALICE)

    async def test_slow_metadata_at_start_does_not_wedge_reads(self, node393: DevChain) -> None:
        node = node393
        seed(node)
        node.delay(1.0, "state_call")  # the metadata answer is slower than CHAIN_TIMEOUT_S
        outcomes: list[str] = []
        async with connected(node.url, warm=False, chain_timeout_s=0.5) as chain:
            deadline = time.monotonic() + 8.0
            while time.monotonic() < deadline and outcomes[-1:] != ["ok"]:
                try:
                    await chain.dividend(3, ALICE)
                    outcomes.append("ok")
                except ChainError as exc:
                    outcomes.append(type(exc).__name__)
                except asyncio.CancelledError:  # the SDK's task, not this test's
                    outcomes.append("CancelledError")
                node.delay(0)  # the node was slow only while the client started
                await asyncio.sleep(0.1)

        assert "CancelledError" not in outcomes, outcomes
        assert outcomes[-1] == "ok", outcomes

    async def test_unreachable_chain_at_start_fails_fast_then_connects(self) -> None:
        port = free_port()
        # The start waits at most the connect bound; once the node is there the bound also
        # covers the metadata decode (~2 s of CPU with the node in this loop).
        chain = SubtensorChain(settings_for(f"ws://127.0.0.1:{port}", chain_connect_timeout_s=5.0))
        try:
            started = time.monotonic()
            await chain.start()
            start_took = time.monotonic() - started
            with pytest.raises(ChainUnavailable):
                await chain.dividend(3, ALICE)
            status = await chain.status()

            async with DevChain(spec=393, port=port) as node:
                node.add_subnet(3)
                node.set_dividend(3, ALICE, 77)
                snapshot = await eventually(lambda: chain.dividend(3, ALICE), within_s=30)
        finally:
            await chain.close()

        assert start_took < 5.0 + 1.0  # the connect bound, not a hang
        assert status.connected is False
        assert snapshot.entries == [DividendEntry(3, ALICE, 77)]


# ====================================================================== staking (raw SDK)
@pytest.fixture
def wallet(tmp_path: Path) -> Any:
    """A throwaway unencrypted wallet in a tmp dir; nothing is written to the repo."""
    from bittensor_wallet import Keypair, Wallet

    created = Wallet(name="devchain", hotkey="default", path=str(tmp_path / "wallets"))
    coldkey = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    created.set_coldkey(coldkey, encrypt=False, overwrite=True)
    created.set_coldkeypub(coldkey, overwrite=True)
    hotkey = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    created.set_hotkey(hotkey, encrypt=False, overwrite=True)
    return created


@pytest.fixture
async def subtensor(node: DevChain) -> AsyncIterator[Any]:
    from bittensor.core.async_subtensor import AsyncSubtensor

    client: Any = AsyncSubtensor(network=node.url, websocket_shutdown_timer=None)
    await client.initialize()
    try:
        yield client
    finally:
        await client.close()


def tao(amount: float, netuid: int | None = None) -> Any:
    from bittensor.utils.balance import Balance

    balance = Balance.from_tao(amount)
    return balance if netuid is None else balance.set_unit(netuid)


class TestStaking:
    async def test_add_stake_of_one_tao_moves_exactly_1e9_rao(
        self, node: DevChain, subtensor: Any, wallet: Any
    ) -> None:
        cold = wallet.coldkeypub.ss58_address
        node.add_subnet(18, price_tao=0.5)
        node.fund(cold, 10)
        fee = node.logic.fee_rao

        response = await subtensor.add_stake(
            wallet=wallet, netuid=18, hotkey_ss58=DEMO_HOTKEY, mev_protection=False, amount=tao(1)
        )

        assert response.success, response.message
        assert response.message == "Success"
        assert response.extrinsic_fee.rao == fee
        assert node.balance(cold) == 10 * RAO - RAO - fee
        assert node.stake(cold, DEMO_HOTKEY, 18) == 2 * RAO  # 1 TAO at 0.5 TAO per alpha
        assert node.nonce(cold) == 1
        (applied,) = node.applied
        assert (applied.call, applied.signer, applied.success) == ("add_stake", cold, True)
        assert applied.args == {"hotkey": DEMO_HOTKEY, "netuid": 18, "amount_staked": RAO}
        stake_added = [e for e in node.events() if e["event_id"] == "StakeAdded"]
        assert [tuple(e["attributes"]) for e in stake_added] == [
            (cold, DEMO_HOTKEY, RAO, 2 * RAO, 18, 0)
        ]
        assert node.rpc_counts["author_submitAndWatchExtrinsic"] == 1

    async def test_unstake_converts_an_alpha_amount_at_the_node_price(
        self, node: DevChain, subtensor: Any, wallet: Any
    ) -> None:
        cold = wallet.coldkeypub.ss58_address
        node.add_subnet(18, price_tao=0.5)
        node.fund(cold, 1)
        node.set_stake(cold, DEMO_HOTKEY, 18, 5 * RAO)
        fee = node.logic.fee_rao

        response = await subtensor.unstake(
            wallet=wallet,
            netuid=18,
            hotkey_ss58=DEMO_HOTKEY,
            mev_protection=False,
            amount=tao(2, netuid=18),
        )

        assert response.success, response.message
        assert node.stake(cold, DEMO_HOTKEY, 18) == 3 * RAO
        assert node.balance(cold) == RAO + RAO - fee  # 2 alpha * 0.5 TAO, minus the fee
        assert [a.call for a in node.applied] == ["remove_stake"]
        assert node.applied[0].args["amount_unstaked"] == 2 * RAO

    async def test_on_chain_failure_returns_the_module_error_name(
        self, node: DevChain, subtensor: Any, wallet: Any
    ) -> None:
        cold = wallet.coldkeypub.ss58_address
        node.add_subnet(18)
        node.fund(cold, 10)
        fee = node.logic.fee_rao
        node.fail_next_extrinsic("NotEnoughBalanceToStake")

        forced = await subtensor.add_stake(
            wallet=wallet, netuid=18, hotkey_ss58=DEMO_HOTKEY, mev_protection=False, amount=tao(1)
        )
        missing_subnet = await subtensor.add_stake(
            wallet=wallet, netuid=5, hotkey_ss58=DEMO_HOTKEY, mev_protection=False, amount=tao(1)
        )

        assert forced.success is False
        assert "NotEnoughBalanceToStake" in forced.message
        assert missing_subnet.success is False
        assert "SubnetNotExists" in missing_subnet.message
        # Included and failed: the fee is paid and the nonce rises; no stake moves.
        assert node.nonce(cold) == 2
        assert node.balance(cold) == 10 * RAO - 2 * fee
        assert node.stake(cold, DEMO_HOTKEY, 18) == 0
        assert [(a.success, a.error) for a in node.applied] == [
            (False, "NotEnoughBalanceToStake"),
            (False, "SubnetNotExists"),
        ]
        # The error index is the runtime's own (it differs between spec 315 and 393).
        (failed,) = [e for e in node.events() if e["event_id"] == "ExtrinsicFailed"]
        module = failed["attributes"]["dispatch_error"]["Module"]
        pallet_index, error_index, _ = node.codec.module_error("SubnetNotExists")
        assert (module["index"], int(module["error"][2:4], 16)) == (pallet_index, error_index)

    async def test_safe_staking_sends_a_price_limit_from_the_node_price(
        self, node: DevChain, subtensor: Any, wallet: Any
    ) -> None:
        cold = wallet.coldkeypub.ss58_address
        node.add_subnet(18, price_tao=0.5)
        node.fund(cold, 10)

        pool = await subtensor.subnet(18)
        missing = await subtensor.subnet(5)  # Option::None from get_dynamic_info
        response = await subtensor.add_stake(
            wallet=wallet,
            netuid=18,
            hotkey_ss58=DEMO_HOTKEY,
            mev_protection=False,
            amount=tao(1),
            safe_staking=True,
            rate_tolerance=0.01,
        )

        assert pool.price.rao == RAO // 2
        assert missing is None
        assert response.success, response.message
        (applied,) = node.applied
        assert applied.call == "add_stake_limit"
        assert applied.args["limit_price"] == round(0.5 * 1.01 * RAO)
        assert node.stake(cold, DEMO_HOTKEY, 18) == 2 * RAO

    async def test_safe_staking_is_refused_when_the_price_moves_past_the_limit(
        self, node: DevChain, subtensor: Any, wallet: Any
    ) -> None:
        cold = wallet.coldkeypub.ss58_address
        node.add_subnet(18, price_tao=0.5)
        node.fund(cold, 10)
        node.delay(0.3, "author_submitAndWatchExtrinsic")

        staking = asyncio.create_task(
            subtensor.add_stake(
                wallet=wallet,
                netuid=18,
                hotkey_ss58=DEMO_HOTKEY,
                mev_protection=False,
                amount=tao(1),
                safe_staking=True,
                rate_tolerance=0.01,
            )
        )
        while node.rpc_counts["author_submitAndWatchExtrinsic"] == 0:
            await asyncio.sleep(0.005)
        node.set_price(18, 0.6)  # moves before the node admits the extrinsic
        response = await staking

        assert response.success is False
        assert "Price exceeded tolerance limit" in response.message
        assert node.applied == []
        assert node.nonce(cold) == 0

    async def test_pool_rejection_is_a_failed_response_and_consumes_no_nonce(
        self, node: DevChain, subtensor: Any, wallet: Any
    ) -> None:
        cold = wallet.coldkeypub.ss58_address
        node.add_subnet(18)
        node.fund(cold, 10)
        node.reject_next_extrinsic("Inability to pay some fees (e.g. account balance too low)")

        rejected = await subtensor.add_stake(
            wallet=wallet, netuid=18, hotkey_ss58=DEMO_HOTKEY, mev_protection=False, amount=tao(1)
        )
        retried = await subtensor.add_stake(
            wallet=wallet, netuid=18, hotkey_ss58=DEMO_HOTKEY, mev_protection=False, amount=tao(1)
        )

        assert rejected.success is False
        assert "Inability to pay some fees" in rejected.message
        assert retried.success, retried.message
        assert node.nonce(cold) == 1
        assert [a.success for a in node.applied] == [True]
