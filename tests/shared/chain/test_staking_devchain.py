"""Contract of `shared.chain.staking.SubtensorStaker` against the simulated node.

The stake client the pipeline uses, over the real bittensor 10.5 `AsyncSubtensor`
(signing, nonces, extrinsic watch, event decoding are the SDK's own), on a wallet
made in a tmp dir and loaded with `load_wallet`. Every expected number is read
from the node's own record (`node.applied`, balances, stakes, nonces, fee).
Skipped when the recorded metadata is absent.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.chain import SubtensorChain
from shared.chain.staking import SubtensorStaker, open_stake_client
from shared.chain.staking_types import (
    AccountState,
    OrderDirection,
    SignedStake,
    StakeOrder,
    StakeOutcome,
    limit_price_rao,
)
from shared.errors import ChainTimeout, ChainUnavailable
from shared.settings import Settings
from tests.devchain import FIXTURES_HINT, SPECS, DevChain, fixtures_dir, free_port
from tests.devchain.seed import DEMO_HOTKEY
from tests.shared.chain.test_wallet import PASSWORD, encrypted_wallet

os.environ["BT_MEV_PROTECTION"] = "0"  # before bittensor is imported (as in the SDK module)

pytestmark = [
    pytest.mark.devchain,
    pytest.mark.skipif(fixtures_dir() is None, reason=FIXTURES_HINT),
]

RAO = 10**9
WALLET_NAME = "devchain-staker"


# ====================================================================== fixtures
def make_unencrypted_wallet(path: Path, name: str = WALLET_NAME) -> str:
    """A throwaway unencrypted coldkey + hotkey at path/name; returns the coldkey address."""
    from bittensor_wallet import Keypair, Wallet

    wallet = Wallet(name=name, hotkey="default", path=str(path))
    coldkey = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    wallet.set_coldkey(coldkey, encrypt=False, overwrite=True)
    wallet.set_coldkeypub(coldkey, overwrite=True)
    wallet.set_hotkey(Keypair.create_from_mnemonic(Keypair.generate_mnemonic()), encrypt=False)
    return str(coldkey.ss58_address)


def staker_settings(url: str, wallet_path: Path, name: str = WALLET_NAME, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "bittensor_network": url,
        "chain_timeout_s": 3.0,
        "chain_connect_timeout_s": 10.0,
        "chain_retry_max_s": 0.5,
        "stake_submit_timeout_s": 10.0,
        "wallet_path": str(wallet_path),
        "wallet_name": name,
        "wallet_hotkey": "default",
        "wallet_password": None,
    }
    values.update(over)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def stake_client(settings: Settings) -> AsyncIterator[SubtensorStaker]:
    """`open_stake_client` over a started SubtensorChain (metadata decoded), closed on exit."""
    chain = SubtensorChain(settings)
    await chain.start()
    try:
        assert chain.connected, "SubtensorChain did not connect to the devchain"
        staker = await open_stake_client(settings, chain)
        assert isinstance(staker, SubtensorStaker)
        yield staker
    finally:
        await chain.close()


@pytest.fixture(params=SPECS, ids=lambda spec: f"spec{spec}")
async def node(request: pytest.FixtureRequest) -> AsyncIterator[DevChain]:
    async with DevChain(spec=request.param) as chain_node:
        yield chain_node


@pytest.fixture
async def node393() -> AsyncIterator[DevChain]:
    async with DevChain(spec=393) as chain_node:
        yield chain_node


@pytest.fixture
def coldkey(tmp_path: Path) -> str:
    return make_unencrypted_wallet(tmp_path / "wallets")


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within_s}s")
        await asyncio.sleep(0.01)


# ====================================================================== account
async def test_account_reads_balance_stake_price_nonce_block_and_deposit(
    tmp_path: Path, coldkey: str
) -> None:
    async with DevChain(spec=393, existential_deposit=1_234) as node:
        node.add_subnet(18, price_tao=0.25)
        node.fund(coldkey, 7.5)
        node.set_stake(coldkey, DEMO_HOTKEY, 18, 3 * RAO)
        node.logic.set_nonce(node.head.state, coldkey, 5)  # type: ignore[arg-type]
        node.seal_block()
        node.seal_block()
        async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
            state = await staker.account(18, DEMO_HOTKEY)
            root = await staker.account(0, DEMO_HOTKEY)

    assert staker.coldkey == coldkey
    assert state == AccountState(
        coldkey=coldkey,
        free_rao=7_500_000_000,
        stake_rao=3 * RAO,
        alpha_price_rao=250_000_000,  # TAO rao per alpha, as the node prices it
        nonce=5,
        block=2,
        existential_deposit_rao=1_234,
    )
    assert (state.free_rao, state.stake_rao, state.alpha_price_rao, state.nonce) == (
        node.balance(coldkey),
        node.stake(coldkey, DEMO_HOTKEY, 18),
        node.price(18),
        node.nonce(coldkey),
    )
    assert (state.block, state.existential_deposit_rao) == (node.head.number, 1_234)
    assert root.alpha_price_rao == RAO and root.stake_rao == 0  # root is priced 1:1


async def test_account_reads_do_not_advance_the_nonce(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18)
    node.fund(coldkey, 1)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        nonces = [(await staker.account(18, DEMO_HOTKEY)).nonce for _ in range(3)]

    assert nonces == [0, 0, 0] == [node.nonce(coldkey)] * 3


# ====================================================================== sign / submit
async def protected(
    staker: SubtensorStaker,
    direction: OrderDirection,
    netuid: int,
    amount: int,
    *,
    tolerance: float = 0.005,
    allow_partial: bool = False,
) -> tuple[SignedStake, StakeOutcome]:
    """What the stake stage does: limit price from the read price, sign, then submit."""
    price = (await staker.account(netuid, DEMO_HOTKEY)).alpha_price_rao
    limit = limit_price_rao(direction, netuid, price, tolerance)
    order = StakeOrder(direction, netuid, DEMO_HOTKEY, amount, limit, allow_partial)
    signed = await staker.sign(order)
    return signed, await staker.submit(signed)


async def test_sign_fixes_hash_nonce_and_window_before_anything_is_sent(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.logic.set_nonce(node.head.state, coldkey, 4)  # type: ignore[arg-type]
    for _ in range(3):
        node.seal_block()
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        order = StakeOrder("add", 18, DEMO_HOTKEY, RAO, 502_499_999)
        signed = await staker.sign(order)
        assert node.applied == [] and node.rpc_counts["author_submitAndWatchExtrinsic"] == 0
        outcome = await staker.submit(signed)

    (applied,) = node.applied
    assert (signed.nonce, signed.era_start_block, signed.era_end_block) == (4, 3, 3 + 128)
    assert signed.extrinsic_hash == applied.hash == outcome.extrinsic_hash
    assert (applied.call, applied.success) == ("add_stake_limit", True)
    assert applied.args == {
        "hotkey": DEMO_HOTKEY,
        "netuid": 18,
        "amount_staked": RAO,
        "limit_price": 502_499_999,
        "allow_partial": False,
    }
    assert node.nonce(coldkey) == 5


async def test_add_stake_moves_exactly_1e9_rao_from_balance_to_stake(
    node: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    fee = node.logic.fee_rao
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        _, outcome = await protected(staker, "add", 18, RAO)

    (applied,) = node.applied
    assert outcome.success, outcome.message
    assert (outcome.message, outcome.error_name) == ("Success", None)
    assert outcome.extrinsic_hash == applied.hash
    assert outcome.block_hash == node.block(applied.block).hash == node.head.hash
    assert (applied.call, applied.signer, applied.success) == ("add_stake_limit", coldkey, True)
    assert applied.args["amount_staked"] == RAO
    assert applied.fee == fee == 50_000
    # Exactly 10^9 rao left the balance besides the fee; at 0.5 TAO per alpha that is 2 alpha.
    assert node.balance(coldkey) == 10 * RAO - RAO - fee
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO
    assert node.nonce(coldkey) == 1


async def test_add_stake_reports_the_fee_and_block_the_node_applied(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.seal_block()  # the extrinsic lands in block 2, not block 1
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        _, outcome = await protected(staker, "add", 18, RAO)
        balance_after_success = node.balance(coldkey)
        node.fail_next_extrinsic("SubnetNotExists")
        _, failed = await protected(staker, "add", 18, RAO)

    applied, applied_failed = node.applied
    assert outcome.success, outcome.message
    assert outcome.fee_rao == applied.fee == 10 * RAO - RAO - balance_after_success
    assert outcome.block == applied.block == 2
    # An included but failed extrinsic is charged too: the outcome says how much.
    assert (failed.success, failed.error_name) == (False, "SubnetNotExists")
    assert failed.fee_rao == applied_failed.fee == balance_after_success - node.balance(coldkey)
    assert failed.block == applied_failed.block == 3


async def test_unstake_removes_exactly_that_alpha_with_a_floor_price(
    node: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 1)
    node.set_stake(coldkey, DEMO_HOTKEY, 18, 5 * RAO)
    fee = node.logic.fee_rao
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        _, outcome = await protected(staker, "remove", 18, 1_500_000_000, tolerance=0.02)

    (applied,) = node.applied
    assert outcome.success, outcome.message
    assert outcome.extrinsic_hash == applied.hash
    assert (applied.call, applied.success) == ("remove_stake_limit", True)
    assert applied.args["amount_unstaked"] == 1_500_000_000  # alpha rao, not TAO
    assert applied.args["limit_price"] == 490_000_000  # 0.5 TAO × (1 − 0.02)
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 3_500_000_000
    assert node.balance(coldkey) == RAO + 750_000_000 - fee  # 1.5 alpha * 0.5 TAO
    assert node.nonce(coldkey) == 1


async def test_on_chain_failure_is_an_outcome_with_the_module_error_name(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18)
    node.fund(coldkey, 10)
    fee = node.logic.fee_rao
    node.fail_next_extrinsic("SubnetNotExists")
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        _, forced = await protected(staker, "add", 18, RAO)
        _, missing_subnet = await protected(staker, "add", 5, RAO)  # a real missing subnet

    forced_applied, missing_applied = node.applied
    for outcome, applied in ((forced, forced_applied), (missing_subnet, missing_applied)):
        assert isinstance(outcome, StakeOutcome)
        assert outcome.success is False
        assert outcome.error_name == "SubnetNotExists"
        assert outcome.message.startswith("SubnetNotExists")
        assert outcome.extrinsic_hash == applied.hash
        assert outcome.block_hash == node.block(applied.block).hash
        assert (applied.success, applied.error) == (False, "SubnetNotExists")
    # Included and failed: the fee is paid and the nonce rises; no stake moves.
    assert node.balance(coldkey) == 10 * RAO - 2 * fee
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 0
    assert node.nonce(coldkey) == 2


async def test_price_moved_before_inclusion_fails_with_slippage_too_high(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        node.move_price_on_next_extrinsic(18, 0.51)  # +2 %, beyond the 0.5 % tolerance
        signed, outcome = await protected(staker, "add", 18, RAO)

    (applied,) = node.applied
    assert (outcome.success, outcome.error_name) == (False, "SlippageTooHigh")
    assert (applied.hash, applied.error) == (signed.extrinsic_hash, "SlippageTooHigh")
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 0
    assert node.balance(coldkey) == 10 * RAO - applied.fee  # only the fee was taken


async def test_price_beyond_the_limit_at_the_pool_is_slippage_too_high_not_included(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        signed = await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, 502_499_999))
        node.set_price(18, 0.6)  # moved between signing and sending
        outcome = await staker.submit(signed)
    assert (outcome.success, outcome.error_name) == (False, "SlippageTooHigh")
    assert node.applied == [] and node.nonce(coldkey) == 0


async def test_pool_rejection_is_a_known_failure_with_nothing_included(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18)
    node.fund(coldkey, 10)
    node.reject_next_extrinsic()
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        _, outcome = await protected(staker, "add", 18, RAO)
    assert (outcome.success, outcome.error_name) == (False, "PoolRejected")
    assert node.applied == [] and node.nonce(coldkey) == 0
    assert node.balance(coldkey) == 10 * RAO


# ====================================================================== find_extrinsic
async def test_find_extrinsic_reads_the_outcome_from_the_hash_in_its_window(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        ok, _ = await protected(staker, "add", 18, RAO)
        node.fail_next_extrinsic("NotEnoughBalanceToStake")
        bad, _ = await protected(staker, "add", 18, RAO)
        never = await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO))  # not sent
        for _ in range(3):
            node.seal_block()
        found = await staker.find_extrinsic(ok.extrinsic_hash, ok.era_start_block, ok.era_end_block)
        failed = await staker.find_extrinsic(
            bad.extrinsic_hash, bad.era_start_block, bad.era_end_block
        )
        missing = await staker.find_extrinsic(
            never.extrinsic_hash, never.era_start_block, never.era_end_block
        )
        upper = await staker.find_extrinsic(ok.extrinsic_hash, 2, 2)  # not in that block

    assert found.outcome is not None and failed.outcome is not None
    assert (found.outcome.success, found.outcome.block, found.outcome.fee_rao) == (True, 1, 50_000)
    assert (failed.outcome.success, failed.outcome.error_name, failed.outcome.block) == (
        False,
        "NotEnoughBalanceToStake",
        2,
    )
    assert (missing.outcome, missing.scanned_to, missing.head) == (None, 5, 5)
    assert (upper.outcome, upper.scanned_to) == (None, 2)


async def test_reply_lost_after_inclusion_is_unknown_then_found_by_its_hash(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    """The node applied it and the reply was lost; the SDK's resend after reconnecting
    meets a spent nonce ("outdated"), which says nothing about this extrinsic's fate."""
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        signed = await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO))
        node.drop_after("author_submitAndWatchExtrinsic")
        with pytest.raises((ChainUnavailable, ChainTimeout)):
            await staker.submit(signed)
        search = await staker.find_extrinsic(
            signed.extrinsic_hash, signed.era_start_block, signed.era_end_block
        )

    (applied,) = node.applied
    assert search.outcome is not None and search.outcome.success
    assert search.outcome.extrinsic_hash == applied.hash == signed.extrinsic_hash
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO


# ====================================================================== faults
async def test_stalled_node_during_submit_is_chain_timeout_within_the_submit_bound(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18)
    node.fund(coldkey, 10)
    settings = staker_settings(node.url, tmp_path / "wallets", stake_submit_timeout_s=0.8)
    async with stake_client(settings) as staker:
        signed = await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO))
        node.stall("author_submitAndWatchExtrinsic")
        started = time.monotonic()
        with pytest.raises(ChainTimeout, match=r"submit within 0\.8s"):
            await staker.submit(signed)
        elapsed = time.monotonic() - started
        node.unstall()

    assert 0.75 <= elapsed < 0.8 + 0.75
    assert node.rpc_counts["author_submitAndWatchExtrinsic"] == 1  # it reached the node
    assert node.applied == [] and node.nonce(coldkey) == 0


async def test_a_submit_after_a_timed_out_one_is_signed_with_the_chain_nonce(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18)
    node.fund(coldkey, 10)
    settings = staker_settings(node.url, tmp_path / "wallets", stake_submit_timeout_s=0.5)
    async with stake_client(settings) as staker:
        node.stall("author_submitAndWatchExtrinsic")
        with pytest.raises(ChainTimeout):
            await protected(staker, "add", 18, RAO)
        node.unstall()  # the stalled extrinsic was never admitted: nonce 0 is still free
        signed, outcome = await protected(staker, "add", 18, RAO)

    assert outcome.success, outcome.message
    assert signed.nonce == 0
    assert [a.success for a in node.applied] == [True]
    assert node.nonce(coldkey) == 1


async def test_nonce_rises_by_one_per_extrinsic_success_or_failure(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:

        async def nonce() -> int:
            return (await staker.account(18, DEMO_HOTKEY)).nonce

        seen = [await nonce()]
        steps: list[Callable[[], Awaitable[tuple[SignedStake, StakeOutcome]]]] = [
            lambda: protected(staker, "add", 18, RAO),  # succeeds
            lambda: protected(staker, "add", 7, RAO),  # fails: no subnet 7
            lambda: protected(staker, "remove", 18, RAO),  # succeeds
        ]
        outcomes = []
        for step in steps:
            outcomes.append((await step())[1])
            seen.append(await nonce())

    assert [o.success for o in outcomes] == [True, False, True]
    assert seen == [0, 1, 2, 3]
    assert [a.success for a in node.applied] == [True, False, True]
    assert node.nonce(coldkey) == 3


async def test_connection_lost_after_inclusion_is_an_unknown_outcome(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.finality_delay_s = 5.0  # included at once; the finality notice comes much later
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        submit = asyncio.create_task(protected(staker, "add", 18, RAO))
        await until(lambda: len(node.applied) == 1)
        await node.drop_connections()  # the answer is lost; the stake moved
        with pytest.raises((ChainUnavailable, ChainTimeout)):
            await submit

    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO
    assert [a.success for a in node.applied] == [True]


# ====================================================================== encrypted coldkey
async def test_encrypted_coldkey_is_unlocked_with_wallet_password_and_signs(
    node393: DevChain, tmp_path: Path
) -> None:
    node = node393
    created = encrypted_wallet(tmp_path / "wallets", "vault")
    coldkey = created["coldkey"]
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    settings = staker_settings(
        node.url, tmp_path / "wallets", "vault", wallet_password=SecretStr(PASSWORD)
    )
    async with stake_client(settings) as staker:
        _, outcome = await protected(staker, "add", 18, RAO)

    assert created["coldkey_encrypted"] == "true"
    assert staker.coldkey == coldkey
    assert outcome.success, outcome.message
    (applied,) = node.applied  # the node verified the signature against the coldkey
    assert (applied.signer, applied.call, applied.success) == (coldkey, "add_stake_limit", True)
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO


# ====================================================================== error replies
async def test_an_error_reply_for_system_account_is_unavailable_never_zero(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    """The SDK's `query` decodes a JSON-RPC error as the storage default: free 0 (a false
    "insufficient balance") and nonce 0 (an "outdated" extrinsic, an unknown outcome)."""
    node = node393
    node.add_subnet(18)
    node.fund(coldkey, 5)
    node.logic.set_nonce(node.head.state, coldkey, 3)  # type: ignore[arg-type]
    node.seal_block()
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        node.error_on_storage("System", "Account")
        with pytest.raises(ChainUnavailable, match=r"System\.Account unreadable"):
            await staker.account(18, DEMO_HOTKEY)
        node.error_on_storage("System", "Account")
        with pytest.raises(ChainUnavailable, match=r"System\.Account unreadable"):
            await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO))
        state = await staker.account(18, DEMO_HOTKEY)  # the fault was one read each
        signed = await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO))
    assert (state.free_rao, state.nonce) == (5 * RAO, 3)
    assert signed.nonce == 3
    assert node.applied == []


async def test_a_missing_account_still_reads_as_empty(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    """Absent from storage (never funded) is the storage default, not an error."""
    node = node393
    node.add_subnet(18)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        state = await staker.account(18, DEMO_HOTKEY)
    assert (state.free_rao, state.nonce) == (0, 0)


async def test_found_in_a_pruned_block_is_included_without_an_outcome(
    tmp_path: Path, coldkey: str
) -> None:
    """A non-archive node serves the block body but no longer its state: the hash is found,
    its events cannot be read; that is neither a success nor a failure."""
    async with DevChain(spec=393, keep_states=4) as node:
        node.add_subnet(18, price_tao=0.5)
        node.fund(coldkey, 10)
        async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
            signed, outcome = await protected(staker, "add", 18, RAO)
            for _ in range(6):
                node.seal_block()
            search = await staker.find_extrinsic(
                signed.extrinsic_hash, signed.era_start_block, signed.era_end_block
            )
    (applied,) = node.applied
    assert outcome.success and search.outcome is None
    assert search.included is not None
    assert (search.included.block, search.included.index) == (applied.block, 0)
    assert search.included.block_hash == node.block(applied.block).hash
    assert search.included.transient is False
    assert "events of block 1 unreadable: State discarded" in search.included.problem
    assert (search.scanned_to, search.head) == (7, 7)


async def test_an_error_reply_for_the_events_is_included_then_read_on_a_later_try(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        signed, _ = await protected(staker, "add", 18, RAO)
        window = (signed.extrinsic_hash, signed.era_start_block, signed.era_end_block)
        node.error_on_storage("System", "Events")
        unreadable = await staker.find_extrinsic(*window)
        readable = await staker.find_extrinsic(*window)
    assert unreadable.outcome is None and unreadable.included is not None
    assert unreadable.included.transient is True
    assert readable.outcome is not None and readable.outcome.success
    assert readable.included is None


async def test_events_unreadable_right_after_inclusion_is_an_unknown_outcome(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    """Never a TypeError on a missing event, never a guessed outcome: unknown, settled from
    the chain by its hash afterwards."""
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        signed = await staker.sign(StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO))
        node.error_on_storage("System", "Events")
        with pytest.raises(ChainUnavailable, match="included in block 1; events of block 1"):
            await staker.submit(signed)
        search = await staker.find_extrinsic(
            signed.extrinsic_hash, signed.era_start_block, signed.era_end_block
        )
    assert search.outcome is not None and search.outcome.success
    assert search.outcome.fee_rao == node.applied[0].fee


async def test_no_connection_is_known_before_anything_is_sent(tmp_path: Path) -> None:
    from shared.chain.staking_types import ChainNotConnected

    make_unencrypted_wallet(tmp_path / "wallets")
    port = free_port()
    settings = staker_settings(
        f"ws://127.0.0.1:{port}", tmp_path / "wallets", chain_connect_timeout_s=0.5
    )
    chain = SubtensorChain(settings)
    await chain.start()
    try:
        staker = await open_stake_client(settings, chain)
        order = StakeOrder("add", 18, DEMO_HOTKEY, RAO, RAO)
        signed = SignedStake(order, "0x" + "00" * 32, 0, 1, 129, payload=object())
        with pytest.raises(ChainNotConnected, match="is not connected"):
            await staker.submit(signed)
        with pytest.raises(ChainNotConnected):
            await staker.account(18, DEMO_HOTKEY)
    finally:
        await chain.close()
    assert issubclass(ChainNotConnected, ChainUnavailable)  # waited out like any outage


# ====================================================================== review 2
async def test_an_error_reply_to_a_runtime_call_is_unavailable_never_a_bad_response(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    """Stake and price come from runtime calls (state_call); an error reply there is an
    outage the stake stage waits out, as one for System.Account is, not a bad response
    that spends the trade's deliveries."""
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 5)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        node.error_on("state_call")
        with pytest.raises(ChainUnavailable, match="account: error reply from the node"):
            await staker.account(18, DEMO_HOTKEY)
        state = await staker.account(18, DEMO_HOTKEY)  # the fault was one answer
    assert (state.free_rao, state.alpha_price_rao) == (5 * RAO, node.price(18))
    assert node.applied == []


async def test_events_that_cannot_be_decoded_are_a_transient_inclusion(
    node393: DevChain, tmp_path: Path, coldkey: str
) -> None:
    """The hash is found, its block's events answer but do not decode: neither an outcome
    nor an error that would keep the lane closed for ever, but an inclusion whose outcome
    is unreadable (transient: settlement tries a few sweeps before recording it)."""
    node = node393
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    async with stake_client(staker_settings(node.url, tmp_path / "wallets")) as staker:
        signed, outcome = await protected(staker, "add", 18, RAO)
        (applied,) = node.applied
        state = node.block(applied.block).state
        assert state is not None
        state.storage.set(node.codec.storage_key("System", "Events"), b"\x08\xff\xff\xff")
        search = await staker.find_extrinsic(
            signed.extrinsic_hash, signed.era_start_block, signed.era_end_block
        )
    assert outcome.success and search.outcome is None
    assert search.included is not None
    assert (search.included.block, search.included.index) == (applied.block, 0)
    assert search.included.transient is True
    assert search.included.problem.startswith(f"events of block {applied.block} undecodable: ")
