"""Settlement by extrinsic hash (pipeline/stages/settlement.py) on the fake staker, which
keeps blocks of extrinsic hashes and mortality windows like the node does."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from redis.asyncio import Redis

from pipeline.stages.settlement import Settlement
from shared.bus import publish
from shared.chain.staking_types import ERA_PERIOD_BLOCKS, RAO_PER_TAO, StakeOutcome
from shared.constants import STREAM_DEAD_LETTER, STREAM_STAKE_EXECUTED
from shared.db.models import StakeAction, Trade
from shared.errors import ChainTimeout
from shared.ids import new_id, utcnow
from shared.settings import Settings
from tests.fakes.chain import ALICE
from tests.fakes.staker import COLDKEY, FakeStaker, Included
from tests.pipeline.conftest import eventually, running_worker
from tests.pipeline.stored import stored_scored

UNSETTLED = {"submitting", "unknown"}


async def _settled(trade_id: str) -> StakeAction | None:
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status not in UNSETTLED else None


async def _row(
    extrinsic_hash: str,
    *,
    start: int = 100,
    status: str = "unknown",
    coldkey: str = COLDKEY,
) -> StakeAction:
    """A stake action left unsettled with its signed extrinsic recorded."""
    trade = await Trade.create(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    return await StakeAction.create(
        trade=trade,
        netuid=3,
        hotkey=ALICE,
        direction="add",
        status=status,
        amount_tao=Decimal(1),
        coldkey=coldkey,
        nonce_before=0,
        block_before=start,
        stake_before_rao=0,
        extrinsic_hash=extrinsic_hash,
        extrinsic_nonce=0,
        era_start_block=start,
        era_end_block=start + ERA_PERIOD_BLOCKS,
    )


def _include(staker: FakeStaker, extrinsic_hash: str, block: int, *, success: bool) -> None:
    error = None if success else "NotEnoughBalanceToStake"
    outcome = StakeOutcome(success, "Success" if success else error or "", error, extrinsic_hash)
    outcome = StakeOutcome(
        outcome.success, outcome.message, error, extrinsic_hash, f"0x{block:064x}", block, 1000
    )
    staker.included.append(Included(block, extrinsic_hash, outcome))


async def test_unknown_outcome_is_settled_from_its_hash_not_resubmitted(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.lose_next = True  # included on chain, then the answer is lost
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(trade_id), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    (signed,) = staker.signed
    (included,) = staker.included
    assert len(staker.extrinsics) == 1
    assert (action.status, action.success) == ("succeeded", True)
    assert action.reason == f"settled from the chain: extrinsic found in block {included.block}"
    assert (action.extrinsic_hash, action.block, action.fee_rao) == (
        signed.extrinsic_hash,
        included.block,
        1000,
    )
    assert (action.extrinsic_nonce, action.era_start_block, action.era_end_block) == (
        0,
        100,
        100 + ERA_PERIOD_BLOCKS,
    )
    assert staker.calls["find_extrinsic"] >= 1


async def test_never_included_is_failed_once_its_window_has_passed(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.drop_next = True  # lost on the way: the chain never sees it
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(trade_id), maxlen=1000)

        async def unknown() -> StakeAction | None:
            row = await StakeAction.get_or_none(trade_id=trade_id)
            return row if row is not None and row.status == "unknown" else None

        await eventually(unknown)
        await asyncio.sleep(0.8)  # several sweeps while the window is open
        assert (await StakeAction.get(trade_id=trade_id)).status == "unknown"
        staker.seal(ERA_PERIOD_BLOCKS + 10)
        action = await eventually(lambda: _settled(trade_id))
    assert (action.status, action.success) == ("failed", False)
    assert action.reason is not None and action.reason.startswith("not included")
    assert staker.included == [] and len(staker.extrinsics) == 1
    (event,) = [
        f
        for _, f in await redis.xrange(STREAM_STAKE_EXECUTED)
        if f[b"trade_id"] == trade_id.encode()
    ]
    assert event[b"status"] == b"failed"


async def test_stake_balance_and_nonce_moves_never_settle_a_row(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """Another extrinsic of the coldkey went in and the stake grew (emissions, another
    trade): the row's own hash is in no block, so it stays unsettled until its window
    has passed, then it is 'not included' — never 'succeeded'."""
    staker = FakeStaker()
    action = await _row("0x" + "ab" * 32, start=100)
    _include(staker, "0x" + "cd" * 32, 101, success=True)  # someone else's extrinsic
    staker.nonce, staker.block = 1, 102
    staker.stakes[(3, ALICE)] = 5 * RAO_PER_TAO
    staker.free_rao -= RAO_PER_TAO
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await asyncio.sleep(0.8)
        assert (await StakeAction.get(id=action.id)).status == "unknown"
        staker.seal(ERA_PERIOD_BLOCKS + 10)
        settled = await eventually(lambda: _settled(action.trade_id))
    assert (settled.status, settled.success) == ("failed", False)
    assert "not included" in (settled.reason or "")


async def test_a_row_that_raises_is_counted_and_never_stops_the_sweeps(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """A coldkey has at most one unsettled row (the database refuses a second), so "the
    rows after it" are the sweeps after it: each counts the failure on the row and goes on,
    and the row settles once the chain answers."""
    staker = FakeStaker()
    broken = await _row("0x" + "01" * 32)
    staker.search_errors[broken.extrinsic_hash or ""] = ValueError("price read 0")
    _include(staker, broken.extrinsic_hash or "", 105, success=False)
    staker.block = 110
    async with running_worker(pipeline_settings, staker, stages=("stake",)):

        async def counted() -> StakeAction | None:
            row = await StakeAction.get(id=broken.id)
            return row if row.settle_attempts >= 2 else None

        stuck = await eventually(counted)
        staker.search_errors.clear()
        settled = await eventually(lambda: _settled(broken.trade_id))
    assert stuck.status == "unknown" and stuck.settle_error == "ValueError: price read 0"
    assert (settled.status, settled.error_name, settled.block) == (
        "failed",
        "NotEnoughBalanceToStake",
        105,
    )
    assert "chain rejected the extrinsic: NotEnoughBalanceToStake" in (settled.reason or "")


async def test_other_coldkeys_rows_are_left_alone(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    action = await _row("0x" + "0f" * 32, coldkey="5SomeOtherColdkey")
    staker.block = 10_000  # far past the row's window: would settle it if it were ours
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await asyncio.sleep(0.6)
    row = await StakeAction.get(id=action.id)
    assert row.status == "unknown" and staker.calls["find_extrinsic"] == 0


async def test_the_lane_stays_closed_while_an_extrinsic_is_unsettled(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """Trade A is lost on the way (unknown outcome); trade B on the same coldkey waits,
    spending no delivery, until A is proven not included, then executes."""
    staker = FakeStaker()
    staker.drop_next = True
    first, second = new_id(), new_id()
    settings = pipeline_settings.model_copy(update={"trade_cooldown_s": 1})
    async with running_worker(settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(first), maxlen=1000)

        async def unknown() -> bool:
            row = await StakeAction.get_or_none(trade_id=first)
            return row is not None and row.status == "unknown"

        await eventually(unknown)
        await asyncio.sleep(1.1)  # past the pair's cooldown: only the lane holds B back
        await publish(redis, await stored_scored(second), maxlen=1000)  # the same pair
        await asyncio.sleep(1.5)  # well past MAX_DELIVERIES × the claim idle time (0.5 s)
        assert len(staker.signed) == 1 and await StakeAction.get_or_none(trade_id=second) is None
        staker.seal(ERA_PERIOD_BLOCKS + 10)
        a = await eventually(lambda: _settled(first))
        b = await eventually(lambda: _settled(second), timeout=30)
        dead = await redis.xrange(STREAM_DEAD_LETTER)
    assert (a.status, b.status) == ("failed", "succeeded")
    assert "not included" in (a.reason or "")
    assert [item.extrinsic_hash for item in staker.included] == [b.extrinsic_hash]
    assert dead == [] and worker.stats["dead_lettered"] == 0


# ------------------------------------------------- review 2, finding 3: consecutive reads
def _settlement(staker: FakeStaker, settings: Settings) -> Settlement:
    async def announce(action: StakeAction) -> None:
        return None

    return Settlement(staker, announce, settings)


async def _due(action: StakeAction) -> None:
    """Old enough for the sweep (its submitter can no longer be running)."""
    await StakeAction.filter(id=action.id).update(updated_at=utcnow() - timedelta(minutes=5))


async def test_earlier_sweep_errors_do_not_make_one_unreadable_read_final(
    orm: str, pipeline_settings: Settings
) -> None:
    """Sweeps that failed before (the node timing out) are no unreadable reads: one error
    reply reading the events must not record `included` (final, never read again) when the
    next sweep can read the outcome."""
    staker = FakeStaker()
    row = await _row("0x" + "3c" * 32)
    assert row.extrinsic_hash is not None
    _include(staker, row.extrinsic_hash, 105, success=True)
    staker.block = 110
    await _due(row)
    settlement = _settlement(staker, pipeline_settings)
    staker.search_errors[row.extrinsic_hash] = ChainTimeout("chain did not answer in 10s")
    for _ in range(4):
        assert await settlement.sweep() == 0
    assert (await StakeAction.get(id=row.id)).settle_attempts == 4
    staker.search_errors.clear()
    staker.unreadable[row.extrinsic_hash] = ("events of block 105 unreadable: Internal error", True)
    assert await settlement.sweep() == 0
    unread = await StakeAction.get(id=row.id)
    assert unread.status == "unknown", unread.reason
    assert "not readable yet (1 of 3 tries)" in (unread.settle_error or "")
    del staker.unreadable[row.extrinsic_hash]
    assert await settlement.sweep() == 1
    settled = await StakeAction.get(id=row.id)
    assert (settled.status, settled.success, settled.block) == ("succeeded", True, 105)


async def test_only_consecutive_unreadable_reads_record_included(
    orm: str, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    row = await _row("0x" + "3d" * 32)
    assert row.extrinsic_hash is not None
    _include(staker, row.extrinsic_hash, 105, success=True)
    staker.block = 110
    await _due(row)
    settlement = _settlement(staker, pipeline_settings)
    problem = ("events of block 105 undecodable: ValueError: Index '255' not present", True)
    staker.unreadable[row.extrinsic_hash] = problem
    assert [await settlement.sweep() for _ in range(2)] == [0, 0]
    staker.search_errors[row.extrinsic_hash] = ChainTimeout("chain did not answer in 10s")
    assert await settlement.sweep() == 0  # not a read: the count starts again
    staker.search_errors.clear()
    assert [await settlement.sweep() for _ in range(2)] == [0, 0]
    assert (await StakeAction.get(id=row.id)).status == "unknown"
    assert await settlement.sweep() == 1  # the third in a row
    included = await StakeAction.get(id=row.id)
    assert (included.status, included.block, included.success) == ("included", 105, None)
    assert included.settle_error == problem[0]
    assert (await Trade.get(trade_id=row.trade_id)).status == "included"


async def test_a_non_transient_unreadable_outcome_is_included_at_once(
    orm: str, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    row = await _row("0x" + "3e" * 32)
    assert row.extrinsic_hash is not None
    _include(staker, row.extrinsic_hash, 105, success=True)
    staker.block = 110
    await _due(row)
    staker.unreadable[row.extrinsic_hash] = ("events of block 105 unreadable: discarded", False)
    assert await _settlement(staker, pipeline_settings).sweep() == 1
    assert (await StakeAction.get(id=row.id)).status == "included"
