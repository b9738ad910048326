"""The stake stage's fences around one coldkey's extrinsics, on the fake staker (which keeps
blocks, nonces and mortality windows like the node): outcomes that cannot be read, the
database fence, the lease checked after signing, bad nonce reads, a closed lane costing
no chain reads, "not connected" meaning nothing sent, staleness under the lease."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis
from tortoise.exceptions import DBConnectionError

from pipeline.stages import executor as executor_module
from shared.bus import publish
from shared.chain.staking_types import ERA_PERIOD_BLOCKS, SignedStake, StakeOutcome
from shared.constants import KEY_COLDKEY_LOCK, STREAM_DEAD_LETTER, STREAM_STAKE_EXECUTED
from shared.db.models import StakeAction, Trade
from shared.ids import new_id, utcnow
from shared.settings import Settings
from tests.fakes.chain import ALICE
from tests.fakes.staker import COLDKEY, FakeStaker, Included
from tests.pipeline.conftest import eventually, running_worker
from tests.pipeline.stored import stored_scored

UNSETTLED = {"submitting", "unknown"}
LOCK_KEY = f"{KEY_COLDKEY_LOCK}{COLDKEY}"


async def _settled(trade_id: str) -> StakeAction | None:
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status not in UNSETTLED else None


async def _with_status(trade_id: str, status: str) -> StakeAction | None:
    row = await StakeAction.get_or_none(trade_id=trade_id)
    return row if row is not None and row.status == status else None


async def _unsettled_row(
    *, extrinsic_hash: str | None, start: int | None = 100, status: str = "unknown"
) -> StakeAction:
    """A stake action of this wallet left unsettled (by a crash, a lost answer, or an older
    release when it has no hash and window)."""
    trade = await Trade.create(trade_id=new_id(), netuid=9, hotkey=ALICE, source="api")
    return await StakeAction.create(
        trade=trade,
        netuid=9,
        hotkey=ALICE,
        direction="add",
        status=status,
        amount_tao=Decimal(1),
        coldkey=COLDKEY,
        extrinsic_hash=extrinsic_hash,
        extrinsic_nonce=None if start is None else 0,
        era_start_block=start,
        era_end_block=None if start is None else start + ERA_PERIOD_BLOCKS,
    )


async def _announced(redis: Redis, trade_id: str) -> list[dict[str, str]]:
    out = []
    for _, fields in await redis.xrange(STREAM_STAKE_EXECUTED):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        if entry.get("trade_id") == trade_id:
            out.append(entry)
    return out


# ---------------------------------------------------------------- finding 1: unreadable
async def test_an_included_extrinsic_with_unreadable_events_reopens_the_lane_as_exposure(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """The extrinsic is in a finalized block but its events cannot be read (pruned state):
    `included`, flagged for an operator, off the lane (nothing can be pending), and its
    amount still counts against the daily limit."""
    staker = FakeStaker()
    staker.unreadable_next = ("events of block 101 unreadable: State discarded", False)
    settings = pipeline_settings.model_copy(update={"daily_trade_limit_tao": 2.5})
    first, second, third = new_id(), new_id(), new_id()
    async with running_worker(settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(first, netuid=3), maxlen=1000)
        included = await eventually(lambda: _with_status(first, "included"))
        await publish(redis, await stored_scored(second, netuid=4), maxlen=1000)
        after = await eventually(lambda: _settled(second))
        await publish(redis, await stored_scored(third, netuid=5), maxlen=1000)
        capped = await eventually(lambda: _settled(third))
        [announced] = await eventually(lambda: _announced(redis, first))
    assert (included.success, included.block) == (None, 101)
    assert included.extrinsic_hash == staker.signed[0].extrinsic_hash
    assert (included.reason or "").startswith("included in block 101 (extrinsic 0); outcome")
    assert f"python -m pipeline settle {first} --status succeeded|failed" in (included.reason or "")
    assert included.settle_error == "events of block 101 unreadable: State discarded"
    assert (await Trade.get(trade_id=first)).status == "included"
    assert announced["status"] == "included"
    assert after.status == "succeeded"  # the lane reopened
    assert capped.status == "skipped"
    assert (capped.reason or "").startswith(
        "daily limit: 2.000000000 TAO traded by this coldkey in the last 24 h"
    )
    assert len(staker.extrinsics) == 2


async def test_error_replies_reading_the_events_make_it_included_after_a_few_sweeps(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    row = await _unsettled_row(extrinsic_hash="0x" + "5a" * 32)
    assert row.extrinsic_hash is not None
    # The hash is in block 104; reading its events answers errors.
    success = StakeOutcome(True, "Success", None, row.extrinsic_hash)
    staker.included.append(Included(104, row.extrinsic_hash, success))
    staker.block = 110
    staker.unreadable[row.extrinsic_hash] = ("events of block 104 unreadable: Internal error", True)
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        included = await eventually(lambda: _with_status(row.trade_id, "included"))
    assert included.settle_attempts == 2  # two sweeps tried again before giving up
    assert (included.block, included.success) == (104, None)


async def test_a_row_without_a_hash_waits_for_an_operator_who_reopens_the_lane(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """Left `unknown` by an older release (no hash, no window): nothing proves its outcome,
    so the lane stays closed and the row names the command; `settle` records the outcome
    and the trade waiting behind it goes ahead."""
    from pipeline.ops.settle import settle

    staker = FakeStaker()
    legacy = await _unsettled_row(extrinsic_hash=None, start=None)
    waiting = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(waiting), maxlen=1000)

        async def flagged() -> StakeAction | None:
            row = await StakeAction.get(id=legacy.id)
            return row if row.settle_attempts >= 1 else None

        stuck = await eventually(flagged)
        await asyncio.sleep(0.5)
        assert await StakeAction.get_or_none(trade_id=waiting) is None
        assert staker.calls["sign"] == 0
        await settle(legacy.trade_id, "failed", "explorer: no such extrinsic", "alice")
        went = await eventually(lambda: _settled(waiting))
        dead = await redis.xlen(STREAM_DEAD_LETTER)
    assert f"python -m pipeline settle {legacy.trade_id}" in (stuck.settle_error or "")
    assert went.status == "succeeded"
    row = await StakeAction.get(id=legacy.id)
    assert (row.status, row.success) == ("failed", False)
    assert (row.reason or "").startswith(
        "settled by operator alice: explorer: no such extrinsic (was unknown: "
    )
    assert dead == 0 and worker.stats["dead_lettered"] == 0


# ---------------------------------------------------------------- finding 2: fences
async def test_a_second_unsettled_row_of_the_coldkey_is_refused_and_nothing_is_sent(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """Another process got past the lease (it lapsed) and stored its unsettled extrinsic
    while we were signing: the database refuses our row, ours is never sent, and the trade
    waits in place until the lane is free."""
    staker = FakeStaker()
    rival: list[StakeAction] = []

    async def slip_in(signed: SignedStake) -> None:
        if not rival:
            rival.append(await _unsettled_row(extrinsic_hash=None, start=None, status="submitting"))

    staker.on_sign = slip_in
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(trade_id), maxlen=1000)

        async def slipped() -> bool:
            return bool(rival)

        await eventually(slipped)
        await asyncio.sleep(1.0)
        assert staker.calls["submit"] == 0
        assert await StakeAction.get_or_none(trade_id=trade_id) is None
        await StakeAction.filter(id=rival[0].id).update(status="failed")  # settled
        action = await eventually(lambda: _settled(trade_id))
    assert action.status == "succeeded"
    first, second = staker.signed
    assert [i.extrinsic_hash for i in staker.included] == [second.extrinsic_hash]
    assert action.extrinsic_hash == second.extrinsic_hash != first.extrinsic_hash
    assert worker.stats["dead_lettered"] == 0


async def test_a_lease_lost_while_signing_sends_nothing(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """The lease is checked again after signing, before the row is stored."""
    staker = FakeStaker()

    async def lose_the_lease(signed: SignedStake) -> None:
        if len(staker.signed) == 1:
            await redis.set(LOCK_KEY, "another-process", px=1200)
            await asyncio.sleep(0.7)  # a renewal meets the other token: lease lost

    staker.on_sign = lose_the_lease
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(trade_id), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    assert action.status == "succeeded"
    first, second = staker.signed
    assert len(staker.extrinsics) == 1
    assert action.extrinsic_hash == second.extrinsic_hash != first.extrinsic_hash


# ---------------------------------------------------------------- finding 3: nonce read
async def test_a_nonce_below_the_accounts_is_never_sent(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    """Signed with a nonce lower than the account's (an error read as 0): the pool would
    answer "outdated" and the lane would close for a whole window. Nothing is sent; the
    trade is signed again."""
    staker = FakeStaker()
    staker.nonce = 2
    staker.sign_nonce_next = 0
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(trade_id), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    assert [s.nonce for s in staker.signed] == [0, 2]
    assert (action.status, action.extrinsic_nonce) == ("succeeded", 2)
    assert len(staker.extrinsics) == 1


# ---------------------------------------------------------------- finding 5: closed lane
async def test_a_closed_lane_is_checked_before_any_chain_read(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    pending = await _unsettled_row(extrinsic_hash="0x" + "77" * 32, start=100)
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(trade_id), maxlen=1000)
        await asyncio.sleep(1.2)  # several retries in place while the window is open
        assert (staker.calls["account"], staker.calls["sign"]) == (0, 0)
        assert (await StakeAction.get(id=pending.id)).status == "unknown"
        staker.seal(ERA_PERIOD_BLOCKS + 10)
        action = await eventually(lambda: _settled(trade_id))
    assert (await StakeAction.get(id=pending.id)).status == "failed"  # not included
    assert action.status == "succeeded" and staker.calls["account"] == 1


# ---------------------------------------------------------------- finding 6: not sent
async def test_not_connected_at_submit_is_failed_not_sent_and_the_lane_stays_open(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.not_connected_next = True
    first, second = new_id(), new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(first, netuid=3), maxlen=1000)
        failed = await eventually(lambda: _settled(first))
        await publish(redis, await stored_scored(second, netuid=4), maxlen=1000)
        went = await eventually(lambda: _settled(second), timeout=4)
    assert (failed.status, failed.success) == ("failed", False)
    assert (failed.reason or "").startswith("not sent: chain ws://fake is not connected")
    assert "nonce 0 unused" in (failed.reason or "")
    assert failed.extrinsic_hash == staker.signed[0].extrinsic_hash  # the record stays
    assert (await Trade.get(trade_id=first)).status == "failed"
    assert went.status == "succeeded" and went.extrinsic_nonce == 0  # the nonce was free
    assert len(staker.extrinsics) == 1 and staker.calls["find_extrinsic"] == 0


# ---------------------------------------------------------------- finding 7: stale
async def test_a_trade_that_goes_stale_waiting_for_the_lease_is_skipped(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    settings = pipeline_settings.model_copy(update={"max_event_age_s": 2.0})
    trade_id = new_id()
    event = await stored_scored(trade_id, created_at=utcnow() - timedelta(seconds=1))
    await redis.set(LOCK_KEY, "another-process", px=1600)  # another worker holds the lane
    async with running_worker(settings, staker, stages=("stake",)):
        await publish(redis, event, maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    assert action.status == "skipped"
    assert (action.reason or "").startswith("stale: the trade is")
    assert staker.calls["account"] == 0 and staker.extrinsics == []


# ---------------------------------------------------------------- nit: no price
async def test_an_unstake_with_no_usable_price_is_skipped(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.prices[3] = 0
    staker.stakes[(3, ALICE)] = 10 * 10**9
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(trade_id, -60), maxlen=1000)
        action = await eventually(lambda: _settled(trade_id))
    assert (action.status, action.direction) == ("skipped", "remove")
    assert action.reason == "no usable price for netuid 3 (read 0 rao): nothing submitted"
    assert staker.calls["sign"] == 0 and worker.stats["dead_lettered"] == 0


# ------------------------------------------- review 2, finding 5: stored but never sent
def _failing_set_status(
    monkeypatch: pytest.MonkeyPatch, statuses: list[str], *, hang: bool = False
) -> None:
    """The executor's `set_status` fails (or hangs) once for each of `statuses`."""
    real = executor_module.set_status

    async def flaky(trade_id: str, status: str, reason: str | None = None) -> None:
        if status in statuses:
            statuses.remove(status)
            if hang:
                await asyncio.sleep(60)
            raise DBConnectionError("connection to the database lost")
        await real(trade_id, status, reason)

    monkeypatch.setattr(executor_module, "set_status", flaky)


async def test_a_failure_between_storing_the_row_and_sending_is_failed_not_sent(
    orm: str, redis: Redis, pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row is stored `submitting`, then the database drops the trade's status update:
    the extrinsic was never sent, so the row ends `failed` "not sent" instead of closing
    the coldkey's lane for the whole mortality window."""
    _failing_set_status(monkeypatch, ["submitting"])
    staker = FakeStaker()
    first, second = new_id(), new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(first, netuid=3), maxlen=1000)
        failed = await eventually(lambda: _settled(first))
        await publish(redis, await stored_scored(second, netuid=4), maxlen=1000)
        went = await eventually(lambda: _settled(second), timeout=4)
        [announced] = await eventually(lambda: _announced(redis, first))
    assert (failed.status, failed.success, failed.message) == ("failed", False, "not sent")
    assert (failed.reason or "").startswith(
        "not sent: DBConnectionError before it was sent: connection to the database lost; "
        "nothing was submitted (nonce 0 unused)"
    )
    assert failed.extrinsic_hash == staker.signed[0].extrinsic_hash  # the record stays
    assert (await Trade.get(trade_id=first)).status == "failed"
    assert announced["status"] == "failed"
    assert went.status == "succeeded" and went.extrinsic_nonce == 0  # the nonce was free
    assert len(staker.extrinsics) == 1 and worker.stats["dead_lettered"] == 0


async def test_a_row_never_sent_is_recorded_once_the_database_is_back(
    orm: str, redis: Redis, pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is down for the status update and for recording "not sent" too: the
    stage remembers the row and records it on its next try, once the database answers."""
    outage = [True]
    _failing_set_status(monkeypatch, ["submitting"])

    class Actions:  # StakeAction, whose "not sent" update fails while `outage` holds
        def __getattr__(self, name: str) -> Any:
            return getattr(StakeAction, name)

        @staticmethod
        def filter(*args: Any, **kwargs: Any) -> Any:
            if outage[0] and "extrinsic_hash" in kwargs:
                raise DBConnectionError("connection to the database lost")
            return StakeAction.filter(*args, **kwargs)

    monkeypatch.setattr(executor_module, "StakeAction", Actions())
    staker = FakeStaker()
    trade_id = new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)) as worker:
        await publish(redis, await stored_scored(trade_id), maxlen=1000)
        await eventually(lambda: _with_status(trade_id, "submitting"))
        await asyncio.sleep(1.0)  # retried in place while the database is down
        assert (await StakeAction.get(trade_id=trade_id)).status == "submitting"
        outage[0] = False
        failed = await eventually(lambda: _settled(trade_id))
        [announced] = await eventually(lambda: _announced(redis, trade_id))
    assert (failed.status, failed.message) == ("failed", "not sent")
    assert (await Trade.get(trade_id=trade_id)).status == "failed"
    assert announced["status"] == "failed"
    assert staker.calls["submit"] == 0 and worker.stats["dead_lettered"] == 0


async def test_a_cancellation_before_the_submit_began_is_failed_not_sent(
    orm: str, redis: Redis, pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler times out (it is cancelled) after the row was stored and before the
    submit began: nothing was sent, and the row does not hold the lane."""
    _failing_set_status(monkeypatch, ["submitting"], hang=True)
    staker = FakeStaker()
    first, second = new_id(), new_id()
    async with running_worker(pipeline_settings, staker, stages=("stake",)):
        await publish(redis, await stored_scored(first, netuid=3), maxlen=1000)
        failed = await eventually(lambda: _settled(first), timeout=15)
        await publish(redis, await stored_scored(second, netuid=4), maxlen=1000)
        went = await eventually(lambda: _settled(second), timeout=4)
    assert (failed.status, failed.message) == ("failed", "not sent")
    assert (failed.reason or "").startswith("not sent: cancelled before it was sent; ")
    assert (await Trade.get(trade_id=first)).status == "failed"
    assert went.status == "succeeded" and went.extrinsic_nonce == 0
    assert len(staker.extrinsics) == 1
