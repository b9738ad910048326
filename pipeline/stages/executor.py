"""The stake executor: signs, stores and sends one extrinsic under the coldkey's lease, and
records what the chain can tell of it.

The stake stage hands it an order already checked and sized under the lease. From there:
- the lane is checked again under the lease before signing (no second extrinsic while one
  of the coldkey's is unsettled), and the lease again after signing;
- a signature whose nonce is below the account's is a bad read: nothing sent, a wait;
- the row, with the extrinsic's hash, nonce and mortality window, is stored `submitting`
  *before* the extrinsic is sent; the database refusing it (the trade taken by another
  consumer, or another unsettled row of the coldkey) is a wait, nothing sent;
- a failure or cancellation after the row may be stored and before the submit began
  records it `failed` "not sent" (remembered until the database takes it), so it never
  holds the lane; no connection at submit is `failed` "not sent" at once;
- once the submit has begun, an error or timeout leaves the row `unknown`: settled only by
  finding its hash in a block (pipeline/stages/settlement.py), never resubmitted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from tortoise.exceptions import IntegrityError

from pipeline.stages.decision import Decision
from pipeline.stages.lane import ColdkeyLane, Lease
from pipeline.stages.records import set_status
from pipeline.stages.settlement import Outcomes, store_action
from pipeline.worker import Retry, Unavailable
from shared.chain.staking_types import (
    NOT_SENT_MESSAGE,
    ChainNotConnected,
    SignedStake,
    StakeClient,
    StakeOrder,
    StakeOutcome,
)
from shared.db.models import StakeAction
from shared.errors import ChainError
from shared.events import SentimentScored
from shared.ids import utcnow
from shared.settings import Settings


class StakeExecutor:
    def __init__(self, lane: ColdkeyLane, outcomes: Outcomes, settings: Settings) -> None:
        self._lane = lane
        self._outcomes = outcomes
        self._settings = settings
        # (trade id, extrinsic hash) of rows stored and never sent that could not be
        # recorded as such yet (the database was down) -> their reason, None once recorded.
        self._unsent: dict[tuple[str, str], str | None] = {}

    async def execute(
        self,
        event: SentimentScored,
        decision: Decision,
        order: StakeOrder,
        staker: StakeClient,
        lease: Lease,
        *,
        nonce: int,
        amount_alpha: int | None,
        fields: dict[str, Any],
    ) -> None:
        """Sign, store and send `order`; `nonce` is the account's as read under `lease`,
        `fields` the chain state stored with the row."""
        # Under the lease: no second extrinsic while one of this coldkey's is unsettled.
        await self._lane.ensure_open(lease)
        # Signed, not sent: a chain error here leaves nothing to settle.
        signed = await staker.sign(order)
        if signed.nonce < nonce:
            # The nonce only grows: a lower one is a bad read, and the pool would answer
            # "outdated" (an unknown outcome closing the lane). Nothing sent.
            raise Unavailable(
                f"signed with nonce {signed.nonce} below the account's {nonce}; nothing sent"
            )
        lease.ensure_held("after signing")  # signing took time; the row fences from here
        action = await self._store(event, decision, signed, amount_alpha, fields)
        log = logger.bind(trade_id=event.trade_id, stage="stake")
        log.info(
            "submitting {} on netuid {}",
            decision.reason,
            event.netuid,
            extrinsic_hash=signed.extrinsic_hash,
            nonce=signed.nonce,
            limit_price_rao=order.limit_price_rao,
        )
        outcome = await self._send(event, action, staker, signed)
        if outcome is not None:
            await self._outcomes.record(event, action, outcome)

    async def _store(
        self,
        event: SentimentScored,
        decision: Decision,
        signed: SignedStake,
        amount_alpha: int | None,
        fields: dict[str, Any],
    ) -> StakeAction:
        """The `submitting` row of `signed`, stored before it is sent."""
        try:
            try:
                action = await store_action(
                    event,
                    decision,
                    "submitting",
                    decision.reason,
                    amount_alpha=amount_alpha,
                    submitted_at=utcnow(),
                    extrinsic_hash=signed.extrinsic_hash,
                    extrinsic_nonce=signed.nonce,
                    era_start_block=signed.era_start_block,
                    era_end_block=signed.era_end_block,
                    **fields,
                )
            except IntegrityError as exc:
                if await StakeAction.exists(trade_id=event.trade_id):
                    # Another consumer holds this trade; look again once it has settled.
                    raise Retry(
                        "stake action already being executed by another consumer", defer_s=2
                    ) from exc
                # The database fence: another extrinsic of this coldkey is unsettled (its
                # holder slipped in past the lease). Ours was never sent; wait for the lane.
                raise Unavailable(
                    "coldkey lane closed: another unsettled extrinsic of this coldkey is "
                    "stored; nothing sent"
                ) from exc
            await set_status(event.trade_id, "submitting")
        except (Retry, Unavailable):
            raise  # the database refused the row: nothing stored, nothing sent
        except (Exception, asyncio.CancelledError) as exc:
            # The row may be stored (an insert whose answer was lost, or set_status failing
            # after it) while its extrinsic was never sent: it must not hold the lane.
            await self._never_sent(event.trade_id, signed, exc)
            raise
        return action

    async def _send(
        self, event: SentimentScored, action: StakeAction, staker: StakeClient, signed: SignedStake
    ) -> StakeOutcome | None:
        """Submit the stored extrinsic; None when its outcome is left to settlement, or it
        was recorded as not sent."""
        started = False  # from the moment `submit` runs, the extrinsic may have been sent

        async def submit() -> StakeOutcome:
            nonlocal started
            started = True
            return await staker.submit(signed)

        try:
            return await asyncio.wait_for(submit(), self._settings.stake_submit_timeout_s)
        except ChainNotConnected as exc:
            await self._not_sent(event, action, exc)
            return None
        except asyncio.CancelledError as exc:
            # Cancelled before `submit` began: nothing sent, the row must not hold the lane.
            # Once it has begun nobody can tell: the row stays `submitting` and settlement
            # proves its outcome by the hash.
            if not started:
                await self._never_sent(event.trade_id, signed, exc)
            raise
        except (ChainError, TimeoutError) as exc:
            if not started:  # timed out before `submit` began (a stalled event loop)
                await self._never_sent(event.trade_id, signed, exc)
                raise
            reason = (
                f"outcome unknown ({type(exc).__name__}: {exc}); settled from the chain by "
                "its extrinsic hash, never resubmitted"
            )
            marked = await StakeAction.filter(id=action.id, status="submitting").update(
                status="unknown", reason=reason, updated_at=utcnow()
            )
            if marked:
                await set_status(event.trade_id, "unknown", reason)
            logger.bind(trade_id=event.trade_id, stage="stake").warning("{}", reason)
            return None

    async def _not_sent(
        self, event: SentimentScored, action: StakeAction, exc: ChainNotConnected
    ) -> None:
        """The chain client had no connection, so `submit` sent nothing: the row ends
        `failed` at once (its nonce unused, the lane open again). Not retried in place: the
        row stays as the record of what was signed, and a trade is never submitted twice."""
        reason = (
            f"not sent: {exc.message}; nothing was submitted (nonce {action.extrinsic_nonce} "
            "unused), not retried"
        )
        marked = await StakeAction.filter(id=action.id, status="submitting").update(
            status="failed",
            success=False,
            message=NOT_SENT_MESSAGE,
            reason=reason,
            updated_at=utcnow(),
        )
        if not marked:
            return
        await action.refresh_from_db()
        await set_status(event.trade_id, "failed", reason)
        logger.bind(trade_id=event.trade_id, stage="stake").warning("{}", reason)
        await self._outcomes.announce(event, action)

    async def _never_sent(self, trade_id: str, signed: SignedStake, exc: BaseException) -> None:
        """A failure or cancellation after the row for `signed` may have been stored and
        before its submit began: the row, if stored, ends `failed` "not sent" (as
        `_not_sent`), or it would keep the coldkey's lane closed for the whole mortality
        window. Shielded from a second cancellation; when the database cannot take it now,
        it is done before the next handler run or settlement sweep of the stage."""
        if isinstance(exc, asyncio.CancelledError):
            why = "cancelled before it was sent"
        else:
            why = f"{type(exc).__name__} before it was sent: {exc}"[:300]
        reason = (
            f"not sent: {why}; nothing was submitted (nonce {signed.nonce} unused), not retried"
        )
        self._unsent[(trade_id, signed.extrinsic_hash)] = reason
        try:
            await asyncio.shield(self.flush_unsent())
        except Exception as error:  # the database is down: kept for the next try
            logger.bind(trade_id=trade_id, stage="stake").warning(
                "could not record a stored extrinsic as not sent yet; will retry",
                error=f"{type(error).__name__}: {error}"[:300],
            )

    async def flush_unsent(self) -> None:
        """Record the rows remembered by `_never_sent` as `failed` "not sent"."""
        for key, reason in list(self._unsent.items()):
            trade_id, extrinsic_hash = key
            if reason is not None:
                marked = await StakeAction.filter(
                    trade_id=trade_id, extrinsic_hash=extrinsic_hash, status="submitting"
                ).update(
                    status="failed",
                    success=False,
                    message=NOT_SENT_MESSAGE,
                    reason=reason,
                    updated_at=utcnow(),
                )
                if not marked:  # never stored (or settled meanwhile): nothing to record
                    self._unsent.pop(key, None)
                    continue
                logger.bind(trade_id=trade_id, stage="stake").warning("{}", reason)
                self._unsent[key] = None  # row recorded; the trade's status is next
            action = await StakeAction.get(trade_id=trade_id)
            await set_status(trade_id, action.status, action.reason)
            self._unsent.pop(key, None)
