"""The stake stage with the real `SubtensorStaker` against the simulated node.

`sentiment_scored` entries go onto real Redis; the stage worker (stake stage only)
signs with a tmp wallet through bittensor's AsyncSubtensor; the node records every
extrinsic it executes (`node.applied`), so "exactly one extrinsic" is the node's word.
Skipped when the recorded metadata is absent.

"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.runner import open_staker
from pipeline.worker import Worker
from shared.bus import publish
from shared.chain.staking import SubtensorStaker
from shared.chain.staking_types import ERA_PERIOD_BLOCKS
from shared.constants import KEY_COLDKEY_LOCK, STREAM_SENTIMENT_SCORED, STREAM_STAKE_EXECUTED
from shared.db.models import StakeAction
from shared.events import SentimentScored
from shared.ids import new_id
from shared.settings import Settings
from tests.conftest import TEST_SIGNING_KEY, make_settings
from tests.devchain import FIXTURES_HINT, DevChain, fixtures_dir
from tests.devchain.seed import DEMO_HOTKEY
from tests.pipeline.conftest import eventually, running_worker
from tests.pipeline.stored import stored_scored
from tests.shared.chain.test_staking_devchain import make_unencrypted_wallet

os.environ["BT_MEV_PROTECTION"] = "0"

pytestmark = [
    pytest.mark.devchain,
    pytest.mark.skipif(fixtures_dir() is None, reason=FIXTURES_HINT),
]

ROOT = Path(__file__).resolve().parents[2]
RAO = 10**9
WALLET = "stake-stage"
SETTLED = {"succeeded", "failed", "skipped", "dry_run"}
# Bound of one stake submission in the killed process (see the env below).
KILLED_CHAIN_TIMEOUT_S, KILLED_SUBMIT_TIMEOUT_S, KILLED_SETTLE_MARGIN_S = 2.0, 3.0, 0.5


# ====================================================================== helpers
def stage_settings(
    redis_url: str, database_url: str, node: DevChain, wallets: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "bittensor_network": node.url,
        "chain_timeout_s": 3.0,
        "chain_connect_timeout_s": 10.0,
        "wallet_path": str(wallets),
        "wallet_name": WALLET,
        "wallet_hotkey": "default",
        "wallet_password": None,
        "stake_amount_tao": 1.0,
        "stake_max_tao": 1.0,
        "stake_sizing": "fixed",
        "staking_enabled": True,
        "stake_dry_run": False,
        "stake_submit_timeout_s": 10.0,
        "worker_handler_timeout_s": 20.0,
        "worker_claim_idle_s": 1.0,  # a Retry(defer 0) comes back after this
        "max_deliveries": 3,
    }
    values.update(overrides)
    return make_settings(redis_url, database_url, **values)


@contextlib.asynccontextmanager
async def stake_worker(settings: Settings, consumer: str) -> AsyncIterator[Worker]:
    """The stake stage on the wallet's real SubtensorStaker (`StakeSetup(staker, None)`)."""
    async with open_staker(settings) as setup:
        assert isinstance(setup.staker, SubtensorStaker) and setup.problem is None, setup.problem
        async with running_worker(
            settings, setup.staker, stages=("stake",), consumer=consumer
        ) as worker:
            yield worker


async def scored(trade_id: str, score: int) -> SentimentScored:
    """The stored trade and score the stake stage acts on, and the event naming them."""
    return await stored_scored(trade_id, score, netuid=18, hotkey=DEMO_HOTKEY)


def settled(trade_id: str) -> Callable[[], Awaitable[StakeAction | None]]:
    async def check() -> StakeAction | None:
        row = await StakeAction.get_or_none(trade_id=trade_id)
        return row if row is not None and row.status in SETTLED else None

    return check


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def executed_events(redis: Redis) -> list[dict[str, str]]:
    """The stake_executed entries, oldest first, as text."""
    entries = await redis.xrange(STREAM_STAKE_EXECUTED) or []
    return [{_text(k): _text(v) for k, v in (fields or {}).items()} for _, fields in entries]


@pytest.fixture
async def node() -> AsyncIterator[DevChain]:
    async with DevChain(spec=393) as chain_node:
        yield chain_node


@pytest.fixture
def coldkey(tmp_path: Path) -> str:
    return make_unencrypted_wallet(tmp_path / "wallets", WALLET)


# ====================================================================== one trade each
async def test_positive_score_stakes_one_tao_on_the_node(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    settings = stage_settings(redis_url, orm, node, tmp_path / "wallets")
    trade_id = new_id()
    await publish(redis, await scored(trade_id, 60), maxlen=1000)
    async with stake_worker(settings, "stake-a"):
        action = await eventually(settled(trade_id), timeout=15)

    (applied,) = node.applied
    assert (applied.call, applied.signer, applied.success) == ("add_stake_limit", coldkey, True)
    assert applied.args == {
        "hotkey": DEMO_HOTKEY,
        "netuid": 18,
        "amount_staked": RAO,
        "limit_price": 502_499_999,  # 0.5 TAO × 1.005, as the SDK's safe staking sends it
        "allow_partial": False,
    }
    assert node.balance(coldkey) == 10 * RAO - RAO - applied.fee  # exactly 1 TAO, plus the fee
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO  # 1 TAO at 0.5 TAO per alpha
    assert (action.status, action.success, action.direction) == ("succeeded", True, "add")
    assert action.amount_tao == Decimal("1.000000000") and action.coldkey == coldkey
    assert (action.nonce_before, action.balance_before_rao, action.stake_before_rao) == (
        0,
        10 * RAO,
        0,
    )
    assert action.extrinsic_hash == applied.hash and action.error_name is None
    assert (action.extrinsic_nonce, action.era_start_block, action.era_end_block) == (
        0,
        0,
        ERA_PERIOD_BLOCKS,
    )
    assert action.limit_price_rao == 502_499_999
    (event,) = await executed_events(redis)
    assert (event["trade_id"], event["status"], event["direction"]) == (
        trade_id,
        "succeeded",
        "add",
    )
    assert event["extrinsic_hash"] == applied.hash


async def test_negative_score_unstakes_alpha_worth_one_tao_at_the_node_price(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    node.add_subnet(18, price_tao=0.05)
    node.fund(coldkey, 1)
    node.set_stake(coldkey, DEMO_HOTKEY, 18, 50 * RAO)
    settings = stage_settings(redis_url, orm, node, tmp_path / "wallets")
    trade_id = new_id()
    await publish(redis, await scored(trade_id, -40), maxlen=1000)
    async with stake_worker(settings, "stake-a"):
        action = await eventually(settled(trade_id), timeout=15)

    worth_one_tao = RAO * RAO // node.price(18)  # 20 alpha at 0.05 TAO per alpha
    assert worth_one_tao == 20 * RAO
    (applied,) = node.applied
    assert (applied.call, applied.success) == ("remove_stake_limit", True)
    assert applied.args["amount_unstaked"] == worth_one_tao
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 50 * RAO - worth_one_tao
    assert node.balance(coldkey) == RAO + RAO - applied.fee  # 20 alpha came back as 1 TAO
    assert (action.status, action.direction) == ("succeeded", "remove")
    assert action.amount_alpha == Decimal("20.000000000")
    assert action.amount_tao == Decimal("1.000000000")
    assert action.stake_before_rao == 50 * RAO and action.extrinsic_hash == applied.hash


async def test_chain_failure_is_recorded_failed_with_the_error_name(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.fail_next_extrinsic("SubnetNotExists")
    settings = stage_settings(redis_url, orm, node, tmp_path / "wallets")
    trade_id = new_id()
    await publish(redis, await scored(trade_id, 60), maxlen=1000)
    async with stake_worker(settings, "stake-a"):
        action = await eventually(settled(trade_id), timeout=15)

    (applied,) = node.applied  # included and failed: not retried
    assert (applied.success, applied.error) == (False, "SubnetNotExists")
    assert (action.status, action.success, action.error_name) == (
        "failed",
        False,
        "SubnetNotExists",
    )
    assert action.reason == "chain rejected the extrinsic: SubnetNotExists"
    assert action.extrinsic_hash == applied.hash
    assert node.balance(coldkey) == 10 * RAO - applied.fee and node.nonce(coldkey) == 1
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 0
    (event,) = await executed_events(redis)
    assert (event["status"], event["error_name"]) == ("failed", "SubnetNotExists")


async def test_the_same_sentiment_scored_twice_gives_one_extrinsic(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    settings = stage_settings(redis_url, orm, node, tmp_path / "wallets")
    trade_id = new_id()
    event = await scored(trade_id, 60)
    for _ in range(2):  # a redelivery / replay of the very same event
        await publish(redis, event, maxlen=1000)
    async with stake_worker(settings, "stake-a"):
        action = await eventually(settled(trade_id), timeout=15)

        async def both_handled() -> bool:
            (group,) = await redis.xinfo_groups(STREAM_SENTIMENT_SCORED)
            return bool(group["pending"] == 0 and group["entries-read"] == 2)

        await eventually(both_handled, timeout=15)
        events = await executed_events(redis)

    assert [a.call for a in node.applied] == ["add_stake_limit"]  # the node saw one extrinsic
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO and node.nonce(coldkey) == 1
    assert action.status == "succeeded"
    # Each answer says the trade succeeded; a second one (if any) says it was already done.
    assert 1 <= len(events) <= 2 and {e["status"] for e in events} == {"succeeded"}
    assert [e["reason"].startswith("already executed") for e in events] == [False, True][
        : len(events)
    ]


# ====================================================================== crash mid-submit
async def test_stage_killed_mid_submit_is_settled_by_its_hash_with_one_extrinsic(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    """A stage process SIGKILLed after its extrinsic reached the node (and was included,
    but before the finality notice came back); a second worker reclaims the entry and
    settles the trade from its stored extrinsic hash: exactly one extrinsic on the node."""
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.finality_delay_s = 60.0  # included at once; the answer the SDK waits for never comes
    wallets = tmp_path / "wallets"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "DATABASE_URL": orm,
        "BITTENSOR_NETWORK": node.url,
        "WALLET_PATH": str(wallets),
        "WALLET_NAME": WALLET,
        "WALLET_HOTKEY": "default",
        "WALLET_PASSWORD": "",
        "STAKING_ENABLED": "true",
        "STAKE_DRY_RUN": "false",
        "STAKE_AMOUNT_TAO": "1",
        "STAKE_MAX_TAO": "1",
        "STAKE_SUBMIT_TIMEOUT_S": str(KILLED_SUBMIT_TIMEOUT_S),
        "STAKE_SETTLE_MARGIN_S": str(KILLED_SETTLE_MARGIN_S),
        "CHAIN_TIMEOUT_S": str(KILLED_CHAIN_TIMEOUT_S),
        "WORKER_HANDLER_TIMEOUT_S": "60",
        "WORKER_CLAIM_IDLE_S": "1",
        "BT_MEV_PROTECTION": "0",
        "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "stage.log"
    trade_id = new_id()
    await publish(redis, await scored(trade_id, 60), maxlen=1000)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--stages", "stake"],
            cwd=tmp_path,  # no .env from the checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def reached_node_or_settled() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"stage process exited early:\n{log_path.read_text()[-3000:]}")
            return bool(node.applied) or await settled(trade_id)() is not None

        await eventually(reached_node_or_settled, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    assert len(node.applied) == 1, log_path.read_text()[-3000:]
    row = await StakeAction.get(trade_id=trade_id)
    assert row.status == "submitting" and row.extrinsic_nonce == 0  # written before submitting
    assert row.extrinsic_hash == node.applied[0].hash
    node.finality_delay_s = 0.02
    # The dead process still holds the coldkey lock; it must lapse once its submission
    # cannot be running any more (account read + submit + margin), not minutes later.
    lock_ttl_ms = await redis.pttl(f"{KEY_COLDKEY_LOCK}{coldkey}")
    bound_s = KILLED_CHAIN_TIMEOUT_S + KILLED_SUBMIT_TIMEOUT_S + KILLED_SETTLE_MARGIN_S
    assert 0 < lock_ttl_ms <= bound_s * 1000

    # The second worker reclaims the entry; its reconciler settles rows whose submission
    # can no longer be running (older than STAKE_SUBMIT_TIMEOUT_S + STAKE_SETTLE_MARGIN_S).
    settings = stage_settings(
        redis_url,
        orm,
        node,
        wallets,
        worker_claim_idle_s=1.0,
        worker_handler_timeout_s=10.0,
        stake_submit_timeout_s=1.0,
        stake_settle_margin_s=0.1,
        stake_reconcile_every_s=0.2,
    )
    async with stake_worker(settings, "stake-b") as worker:
        action = await eventually(settled(trade_id), timeout=bound_s + 10)

        async def reclaimed_entry() -> int:
            return worker.stats["reclaimed"]

        # The dead consumer's entry is reclaimed too; handled after settlement, it only
        # announces "already executed".
        reclaimed = await eventually(reclaimed_entry, timeout=15)

    (applied,) = node.applied  # settled, never resubmitted
    assert (applied.call, applied.success) == ("add_stake_limit", True)
    assert reclaimed == 1
    assert (action.status, action.success) == ("succeeded", True), (
        action.reason,
        node.stake(coldkey, DEMO_HOTKEY, 18),
        action.hotkey,
        action.netuid,
    )
    assert action.reason == f"settled from the chain: extrinsic found in block {applied.block}"
    assert (action.block, action.fee_rao) == (applied.block, applied.fee)
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO
    assert node.balance(coldkey) == 10 * RAO - RAO - applied.fee
    events = await executed_events(redis)
    assert {(e["trade_id"], e["status"]) for e in events} == {(trade_id, "succeeded")}


# ====================================================================== price protection
async def test_price_moved_beyond_tolerance_is_failed_with_the_error_named_not_retried(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.move_price_on_next_extrinsic(18, 0.51)  # +2 % between the account read and inclusion
    settings = stage_settings(redis_url, orm, node, tmp_path / "wallets")
    trade_id = new_id()
    await publish(redis, await scored(trade_id, 60), maxlen=1000)
    async with stake_worker(settings, "stake-a"):
        action = await eventually(settled(trade_id), timeout=15)

        async def handled() -> bool:
            (group,) = await redis.xinfo_groups(STREAM_SENTIMENT_SCORED)
            return bool(group["pending"] == 0)

        await eventually(handled, timeout=15)
        await asyncio.sleep(1.5)  # a retry would have been sent by now

    (applied,) = node.applied  # exactly one extrinsic, included and failed
    assert (applied.success, applied.error) == (False, "SlippageTooHigh")
    assert applied.args["limit_price"] == action.limit_price_rao == 502_499_999
    assert (action.status, action.success, action.error_name) == (
        "failed",
        False,
        "SlippageTooHigh",
    )
    assert "SlippageTooHigh" in (action.reason or "") and "not retried" in (action.reason or "")
    assert action.extrinsic_hash == applied.hash
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 0
    (event,) = await executed_events(redis)
    assert (event["status"], event["error_name"]) == ("failed", "SlippageTooHigh")


# ====================================================================== unknown outcomes
async def test_lost_first_extrinsic_keeps_the_lane_closed_then_is_not_included(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    """The issue's scenario: trade A's extrinsic is lost on the way (the node never
    applies it, the outcome is unknown); trade B on the same pair waits while A is
    unsettled; A is settled "not included" once its window has passed, never
    "succeeded"; then B executes. Exactly one extrinsic is applied: B's."""
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    settings = stage_settings(
        redis_url,
        orm,
        node,
        tmp_path / "wallets",
        stake_submit_timeout_s=2.0,
        stake_settle_margin_s=0.1,
        stake_reconcile_every_s=0.2,
        trade_cooldown_s=1,
    )
    first, second = new_id(), new_id()
    node.stall("author_submitAndWatchExtrinsic")  # sent, never answered, never applied
    await publish(redis, await scored(first, 60), maxlen=1000)
    async with stake_worker(settings, "stake-a") as worker:

        async def unknown() -> StakeAction | None:
            row = await StakeAction.get_or_none(trade_id=first)
            return row if row is not None and row.status == "unknown" else None

        lost = await eventually(unknown, timeout=20)
        node.unstall()
        await publish(redis, await scored(second, 60), maxlen=1000)
        await asyncio.sleep(3.0)  # many sweeps and lane checks while A's window is open
        assert node.applied == []
        assert await StakeAction.get_or_none(trade_id=second) is None  # B was never signed
        assert (await StakeAction.get(trade_id=first)).status == "unknown"
        for _ in range(ERA_PERIOD_BLOCKS + 8):  # the chain moves past A's window
            node.seal_block()
        a = await eventually(settled(first), timeout=20)
        b = await eventually(settled(second), timeout=40)
        stats = dict(worker.stats)

    (applied,) = node.applied
    assert (a.status, a.success) == ("failed", False)
    assert a.reason is not None and a.reason.startswith("not included")
    assert a.extrinsic_hash == lost.extrinsic_hash != applied.hash
    assert (b.status, b.extrinsic_hash) == ("succeeded", applied.hash)
    assert stats["dead_lettered"] == 0
    events = {e["trade_id"]: e["status"] for e in await executed_events(redis)}
    assert events == {first: "failed", second: "succeeded"}


async def test_reply_lost_after_inclusion_is_settled_succeeded_from_its_hash(
    orm: str, redis: Redis, redis_url: str, node: DevChain, coldkey: str, tmp_path: Path
) -> None:
    node.add_subnet(18, price_tao=0.5)
    node.fund(coldkey, 10)
    node.drop_after("author_submitAndWatchExtrinsic")  # applied, then the reply is lost
    settings = stage_settings(
        redis_url,
        orm,
        node,
        tmp_path / "wallets",
        stake_submit_timeout_s=2.0,
        stake_settle_margin_s=0.1,
        stake_reconcile_every_s=0.2,
    )
    trade_id = new_id()
    await publish(redis, await scored(trade_id, 60), maxlen=1000)
    async with stake_worker(settings, "stake-a"):
        action = await eventually(settled(trade_id), timeout=30)

    (applied,) = node.applied
    assert (action.status, action.success) == ("succeeded", True)
    assert action.reason == f"settled from the chain: extrinsic found in block {applied.block}"
    assert (action.extrinsic_hash, action.block) == (applied.hash, applied.block)
    assert node.stake(coldkey, DEMO_HOTKEY, 18) == 2 * RAO
