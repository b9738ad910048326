"""The stake executor (pipeline/stages/executor.py) driven directly on the fake staker: the
row is stored with the signed extrinsic's hash, nonce and window before it is sent; a bad
nonce read or a lease lost while signing sends nothing and stores nothing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from pipeline.stages.decision import Decision
from pipeline.stages.executor import StakeExecutor
from pipeline.stages.lane import ColdkeyLane, Lease
from pipeline.stages.records import Publisher
from pipeline.stages.settlement import Outcomes
from pipeline.worker import Unavailable
from shared.chain.staking_types import (
    RAO_PER_TAO,
    SignedStake,
    StakeOrder,
    StakeOutcome,
    limit_price_rao,
)
from shared.constants import STREAM_STAKE_EXECUTED
from shared.db.models import StakeAction, Trade
from shared.events import SentimentScored
from shared.ids import new_id
from shared.settings import Settings
from tests.fakes.chain import ALICE
from tests.fakes.staker import COLDKEY, FakeStaker
from tests.pipeline.stored import stored_scored

DECISION = Decision("add", RAO_PER_TAO, "score 60: stake 1 TAO")


def _executor(redis: Redis, settings: Settings) -> tuple[StakeExecutor, ColdkeyLane]:
    lane = ColdkeyLane.from_settings(redis, settings)
    outcomes = Outcomes(Publisher(redis, maxlen=1000), settings)
    return StakeExecutor(lane, outcomes, settings), lane


def _order(staker: FakeStaker) -> StakeOrder:
    return StakeOrder(
        direction="add",
        netuid=3,
        hotkey=ALICE,
        amount_rao=RAO_PER_TAO,
        limit_price_rao=limit_price_rao("add", 3, staker.price(3), 0.005),
        allow_partial=False,
    )


async def _execute(
    executor: StakeExecutor,
    staker: FakeStaker,
    event: SentimentScored,
    lease: Lease,
    *,
    nonce: int,
) -> None:
    await executor.execute(
        event,
        DECISION,
        _order(staker),
        staker,
        lease,
        nonce=nonce,
        amount_alpha=None,
        fields={"coldkey": COLDKEY, "nonce_before": nonce},
    )


async def test_the_row_is_stored_before_the_extrinsic_is_sent(
    orm: str, redis: Redis, pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    staker = FakeStaker()
    event = await stored_scored(new_id())
    at_submit: list[StakeAction] = []
    submit = staker.submit

    async def watched(signed: SignedStake) -> StakeOutcome:
        at_submit.append(await StakeAction.get(trade_id=event.trade_id))
        return await submit(signed)

    monkeypatch.setattr(staker, "submit", watched)
    executor, lane = _executor(redis, pipeline_settings)
    async with lane.hold(COLDKEY) as lease:
        await _execute(executor, staker, event, lease, nonce=0)
    [signed] = staker.signed
    [stored] = at_submit
    assert stored.status == "submitting"
    assert (
        stored.extrinsic_hash,
        stored.extrinsic_nonce,
        stored.era_start_block,
        stored.era_end_block,
    ) == (signed.extrinsic_hash, 0, signed.era_start_block, signed.era_end_block)
    action = await StakeAction.get(trade_id=event.trade_id)
    assert (action.status, action.success, action.amount_tao) == ("succeeded", True, 1)
    assert (await Trade.get(trade_id=event.trade_id)).status == "succeeded"
    [(_, announced)] = await redis.xrange(STREAM_STAKE_EXECUTED)
    assert announced[b"status"] == b"succeeded"
    assert staker.calls["submit"] == 1


async def test_a_nonce_below_the_accounts_stores_and_sends_nothing(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    staker.nonce = 5
    staker.sign_nonce_next = 4
    event = await stored_scored(new_id())
    executor, lane = _executor(redis, pipeline_settings)
    async with lane.hold(COLDKEY) as lease:
        with pytest.raises(Unavailable, match="signed with nonce 4 below the account's 5"):
            await _execute(executor, staker, event, lease, nonce=5)
    assert await StakeAction.filter(trade_id=event.trade_id).count() == 0
    assert (staker.calls["sign"], staker.calls["submit"]) == (1, 0)


async def test_a_lease_lost_while_signing_stores_and_sends_nothing(
    orm: str, redis: Redis, pipeline_settings: Settings
) -> None:
    staker = FakeStaker()
    event = await stored_scored(new_id())
    executor, lane = _executor(redis, pipeline_settings)
    async with lane.hold(COLDKEY) as lease:

        async def lose(signed: SignedStake) -> None:
            lease.lost.set()

        staker.on_sign = lose
        with pytest.raises(Unavailable, match="coldkey lease lost after signing"):
            await _execute(executor, staker, event, lease, nonce=0)
    assert await StakeAction.filter(trade_id=event.trade_id).count() == 0
    assert (staker.calls["sign"], staker.calls["submit"]) == (1, 0)
