"""stake stage: sentiment_scored → add_stake / unstake → stake action stored → stake_executed.

Safety rules (the stage acts with real money):
- the entry only says which trade to look at: netuid and hotkey come from the trade's
  row, the score from its stored sentiment row; an entry that disagrees with them is
  recorded `rejected`, one without stored rows is never turned into a trade;
- risk limits (pipeline/stages/risk.py) for every source: allowlist, dead band, age,
  cooldown and daily limit before the chain is read, the position cap after;
- idempotent per trade: a `stake_actions` row, unique per trade, is written
  *before* submitting; a redelivery, a replay or a second consumer finds it and
  never submits again ("already executed");
- price protection: `add_stake_limit` / `remove_stake_limit` with the SDK's limit
  price (SLIPPAGE_TOLERANCE, partial fills only with ALLOW_PARTIAL_STAKE); a price
  moved beyond it is a known failure (`SlippageTooHigh`), never retried;
- the extrinsic is signed first and its hash, nonce and mortality window stored
  with the row before it is sent; a row left `submitting` or `unknown` is settled
  only by finding that hash in a block (pipeline/stages/settlement.py), never from
  stake, balance or nonce changes, and never resubmitted; a failure or cancellation
  after the row is stored and before the submit began records it `failed` "not sent";
- one try fits the handler timeout: the wait for the lane leaves room for the account
  read, the signature and the submit (Settings.stake_lane_wait_s);
- one extrinsic at a time per coldkey (pipeline/stages/lane.py): while one of the
  coldkey's extrinsics is unsettled the trade waits before any chain read; a renewed
  lease with a deadline, checked before signing and again before the row is stored; and
  the database refuses a second unsettled row of one coldkey (a partial unique index),
  which reads as "wait", nothing sent;
- an extrinsic found in a block whose outcome cannot be read is `included`: counted as
  exposure, off the lane, flagged for an operator (`python -m pipeline settle`);
- kill switch (STAKING_ENABLED), dry run (STAKE_DRY_RUN), amount capped at
  STAKE_MAX_TAO, free balance checked before adding, held stake checked (and
  the TAO amount converted to alpha at the current price) before removing;
- every decision, including "skipped, and why", is stored and published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from tortoise.exceptions import IntegrityError

from pipeline.stages import risk
from pipeline.stages.decision import Decision, alpha_for_tao, decide, tao
from pipeline.stages.lane import ColdkeyLane, Lease, ensure_no_unsettled
from pipeline.stages.records import Publisher, parse_event, set_status
from pipeline.stages.settlement import Settlement, failure_reason, record_outcome
from pipeline.worker import Drop, Job, Retry, StreamEntry, Unavailable
from shared.chain.staking_types import (
    NOT_SENT_MESSAGE,
    ChainNotConnected,
    OrderDirection,
    SignedStake,
    StakeClient,
    StakeOrder,
    StakeOutcome,
    limit_price_rao,
)
from shared.db.models import SentimentScore, StakeAction, Trade
from shared.errors import ChainError
from shared.events import SentimentScored, StakeExecuted
from shared.ids import utcnow
from shared.settings import Settings

# `included`: in a finalized block, outcome unreadable; never submitted again.
TERMINAL = {"succeeded", "failed", "skipped", "dry_run", "rejected", "included"}
UNSETTLED = {"submitting", "unknown"}
MISSING_ROW_DELIVERIES = 2  # deliveries that may find no stored rows before the refusal


class StakeStage:
    def __init__(
        self,
        redis: Redis,
        staker: StakeClient | None,
        publish: Publisher,
        settings: Settings,
        *,
        wallet_problem: str | None = None,
    ) -> None:
        self._redis = redis
        self._settle_margin_s = settings.stake_settle_margin_s
        # A live holder needs at most one account read and one submit; a crashed holder's
        # lock must expire by the time its row is due for reconciliation, or the trade stays
        # unsettled (and the coldkey blocked) for as long as the TTL.
        self._lock_ttl_s = (
            settings.chain_timeout_s + settings.stake_submit_timeout_s + self._settle_margin_s
        )
        # Wait for the coldkey only as long as one try's time allows after its own account
        # read, signature and submit (the settings refuse a budget that leaves no wait):
        # a try that times out mid-submit would spend a delivery and cancel the submit.
        self._lock_wait_s = settings.stake_lane_wait_s
        self._lane = ColdkeyLane(redis, ttl_s=self._lock_ttl_s, wait_s=self._lock_wait_s)
        self._leases: dict[str, Lease] = {}
        # (trade id, extrinsic hash) of rows stored and never sent that could not be
        # recorded as such yet (the database was down) -> their reason, None once recorded.
        self._unsent: dict[tuple[str, str], str | None] = {}
        self._staker = staker
        self._publish = publish
        self._settings = settings
        self._wallet_problem = wallet_problem or "no wallet configured"
        self._settlement = (
            None if staker is None else Settlement(staker, self._announce_settled, settings)
        )

    async def handle(self, entry: StreamEntry) -> None:
        event = parse_event(SentimentScored, entry)
        if self._unsent:
            await self._flush_unsent()
        action = await StakeAction.get_or_none(trade_id=event.trade_id)
        if action is not None and action.status in TERMINAL:
            logger.bind(trade_id=event.trade_id).info(
                "already executed ({}); not submitting again", action.status
            )
            await self._announce(event, action, note="already executed")
            return
        if action is not None and action.status in UNSETTLED:
            # Submitted, outcome not known yet: the reconciler settles it from chain state
            # once the submission can no longer be running. Never submit again.
            logger.bind(trade_id=event.trade_id).info(
                "stake action {} is being settled by the reconciler", action.status
            )
            return
        trade, stored = await asyncio.gather(
            Trade.get_or_none(trade_id=event.trade_id),
            SentimentScore.get_or_none(trade_id=event.trade_id),
        )
        if trade is None or stored is None:
            await self._missing_rows(entry, event, trade)
            return
        wrong = risk.disagreements(event, trade, stored)
        # From here on only stored values decide: the entry is a wake-up call, not an order.
        trusted = event.model_copy(
            update={"netuid": trade.netuid, "hotkey": trade.hotkey, "score": stored.score}
        )
        if wrong:
            reason = "event disagrees with the stored trade: " + "; ".join(wrong)
            await self._finish(trusted, Decision("none", 0, reason), "rejected", reason)
            return
        await self._execute(trusted, trade)

    async def _missing_rows(
        self, entry: StreamEntry, event: SentimentScored, trade: Trade | None
    ) -> None:
        """A stage publishes only after its rows are committed, so a missing row is not a
        race in one database; one short retry still covers a reader that lags (a pool
        connection or a fail-over), after which the entry is refused. Nothing is created
        from the event: the stage never invents the trade it is told to execute."""
        what = "trade" if trade is None else "sentiment score"
        if entry.deliveries < MISSING_ROW_DELIVERIES:
            raise Retry(f"no stored {what} for this trade yet", defer_s=1)
        if trade is None:
            # A stake action needs its trade row: the dead letter is the only record left.
            raise Drop("no stored trade for this sentiment_scored entry; nothing submitted")
        reason = "no stored sentiment score for this trade; nothing submitted"
        trusted = event.model_copy(
            update={"netuid": trade.netuid, "hotkey": trade.hotkey, "score": None}
        )
        await self._finish(trusted, Decision("none", 0, reason), "rejected", reason)

    # ------------------------------------------------------------------ decision
    async def _execute(self, event: SentimentScored, trade: Trade) -> None:
        """`event` carries the stored netuid, hotkey and score (see `handle`)."""
        settings = self._settings
        decision = decide(event.score, settings)
        if decision.direction == "none":
            await self._finish(event, decision, "skipped", decision.reason)
            return
        assert event.score is not None  # a direction needs a score
        refusal = risk.precheck(event.netuid, event.score, trade.created_at, utcnow(), settings)
        if refusal is not None:
            await self._finish(event, decision, "skipped", refusal)
            return
        if not settings.staking_enabled:
            await self._finish(
                event, decision, "skipped", "staking disabled (STAKING_ENABLED=false)"
            )
            return
        if self._staker is None:
            await self._finish(
                event, decision, "skipped", f"{self._wallet_problem}: nothing submitted"
            )
            return
        staker = self._staker
        # Before any chain read or lease: while the lane is closed (an unsettled extrinsic,
        # up to its mortality window) a waiting trade costs one query per retry.
        await ensure_no_unsettled(staker.coldkey)
        async with self._coldkey_lock(staker.coldkey):
            await self._submit(event, decision, staker, trade)

    @contextlib.asynccontextmanager
    async def _coldkey_lock(self, coldkey: str) -> AsyncIterator[None]:
        """The coldkey's lease, renewed while held (`Unavailable` when it cannot be had).

        The lane itself opens only when no extrinsic of the coldkey is unsettled (checked
        before the lease, under it, and just before signing): a handler timeout releases
        the lease, never the lane."""
        async with self._lane.hold(coldkey) as lease:
            self._leases[coldkey] = lease
            try:
                yield
            finally:
                self._leases.pop(coldkey, None)

    async def _submit(
        self, event: SentimentScored, decision: Decision, staker: StakeClient, trade: Trade
    ) -> None:
        if await StakeAction.exists(trade_id=event.trade_id):
            # Another consumer executed this trade while we waited for the coldkey lock.
            raise Retry("stake action recorded while waiting for the lock", defer_s=0)
        lease = self._leases[staker.coldkey]
        await self._lane.ensure_open(lease)
        # The wait for the lease may have taken the trade past its age limit.
        refusal = risk.stale(trade.created_at, utcnow(), self._settings)
        if refusal is not None:
            await self._finish(event, decision, "skipped", refusal, coldkey=staker.coldkey)
            return
        # Under the coldkey lock: this wallet's other trades have stored their rows.
        refusal = await risk.check_history(
            event.netuid,
            event.hotkey,
            staker.coldkey,
            decision.amount_rao,
            utcnow(),
            self._settings,
        )
        if refusal is not None:
            await self._finish(event, decision, "skipped", refusal, coldkey=staker.coldkey)
            return
        account = await staker.account(event.netuid, event.hotkey)
        fields: dict[str, Any] = {
            "coldkey": account.coldkey,
            "nonce_before": account.nonce,
            "block_before": account.block,
            "stake_before_rao": account.stake_rao,
            "balance_before_rao": account.free_rao,
        }
        amount_alpha: int | None = None
        refusal = risk.over_position_cap(
            decision.direction, decision.amount_rao, account, self._settings
        )
        if refusal is not None:
            await self._finish(event, decision, "skipped", refusal, **fields)
            return
        direction: OrderDirection = "add" if decision.direction == "add" else "remove"
        try:
            limit = limit_price_rao(
                direction, event.netuid, account.alpha_price_rao, self._settings.slippage_tolerance
            )
        except ValueError as exc:  # no usable price: nothing can be sized or protected
            await self._finish(event, decision, "skipped", f"{exc}: nothing submitted", **fields)
            return
        if decision.direction == "add":
            spendable = account.free_rao - account.existential_deposit_rao
            if spendable < decision.amount_rao:
                await self._finish(
                    event,
                    decision,
                    "skipped",
                    f"insufficient free balance: {tao(account.free_rao)} TAO "
                    f"for {tao(decision.amount_rao)} TAO",
                    **fields,
                )
                return
        else:
            if account.stake_rao <= 0:
                await self._finish(
                    event,
                    decision,
                    "skipped",
                    f"nothing to unstake on netuid {event.netuid}",
                    **fields,
                )
                return
            amount_alpha = min(
                alpha_for_tao(decision.amount_rao, account.alpha_price_rao), account.stake_rao
            )
        fields["limit_price_rao"] = limit
        if self._settings.stake_dry_run:
            what = "add_stake_limit" if decision.direction == "add" else "remove_stake_limit"
            await self._finish(
                event,
                decision,
                "dry_run",
                f"STAKE_DRY_RUN: would {what} ({decision.reason})",
                amount_alpha=amount_alpha,
                **fields,
            )
            return
        if direction == "add":
            amount = decision.amount_rao
        else:
            assert amount_alpha is not None
            amount = amount_alpha
        order = StakeOrder(
            direction=direction,
            netuid=event.netuid,
            hotkey=event.hotkey,
            amount_rao=amount,
            limit_price_rao=limit,
            allow_partial=self._settings.allow_partial_stake,
        )
        # Under the lease: no second extrinsic while one of this coldkey's is unsettled.
        await self._lane.ensure_open(lease)
        # Signed, not sent: a chain error here leaves nothing to settle.
        signed = await staker.sign(order)
        if signed.nonce < account.nonce:
            # The nonce only grows: a lower one is a bad read, and the pool would answer
            # "outdated" (an unknown outcome closing the lane). Nothing sent.
            raise Unavailable(
                f"signed with nonce {signed.nonce} below the account's {account.nonce}; "
                "nothing sent"
            )
        lease.ensure_held("after signing")  # signing took time; the row fences from here
        try:
            try:
                action = await StakeAction.create(
                    trade_id=event.trade_id,
                    netuid=event.netuid,
                    hotkey=event.hotkey,
                    direction=decision.direction,
                    status="submitting",
                    score=event.score,
                    reason=decision.reason,
                    amount_tao=tao(decision.amount_rao),
                    amount_alpha=None if amount_alpha is None else tao(amount_alpha),
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
        log = logger.bind(trade_id=event.trade_id, stage="stake")
        log.info(
            "submitting {} on netuid {}",
            decision.reason,
            event.netuid,
            extrinsic_hash=signed.extrinsic_hash,
            nonce=signed.nonce,
            limit_price_rao=limit,
        )
        outcome = await self._send(event, action, staker, signed)
        if outcome is not None:
            await self._record_outcome(event, action, outcome)

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
        await self._announce(event, action)

    async def _never_sent(self, trade_id: str, signed: SignedStake, exc: BaseException) -> None:
        """A failure or cancellation after the row for `signed` may have been stored and
        before its submit began: the row, if stored, ends `failed` "not sent" (as
        `_not_sent`), or it would keep the coldkey's lane closed for the whole mortality
        window. Shielded from a second cancellation; when the database cannot take it now,
        it is done before the next handler run or settlement sweep of this stage."""
        if isinstance(exc, asyncio.CancelledError):
            why = "cancelled before it was sent"
        else:
            why = f"{type(exc).__name__} before it was sent: {exc}"[:300]
        reason = (
            f"not sent: {why}; nothing was submitted (nonce {signed.nonce} unused), not retried"
        )
        self._unsent[(trade_id, signed.extrinsic_hash)] = reason
        try:
            await asyncio.shield(self._flush_unsent())
        except Exception as error:  # the database is down: kept for the next try
            logger.bind(trade_id=trade_id, stage="stake").warning(
                "could not record a stored extrinsic as not sent yet; will retry",
                error=f"{type(error).__name__}: {error}"[:300],
            )

    async def _flush_unsent(self) -> None:
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

    async def _record_outcome(
        self, event: SentimentScored, action: StakeAction, outcome: StakeOutcome
    ) -> None:
        reason = (
            None if outcome.success else failure_reason(outcome, self._settings.slippage_tolerance)
        )
        log = logger.bind(trade_id=event.trade_id, stage="stake")
        if not await record_outcome(action, outcome, reason):
            log.info("stake action was settled meanwhile; not recorded twice")
            return
        log.info("{} {}: {}", action.direction, action.status, outcome.message)
        await self._announce(event, action)

    # ------------------------------------------------------------------ settlement
    def settlement_job(self, *, every_s: float, timeout_s: float) -> Job:
        """The settlement sweep as a job of the worker (its drain, health key and metrics);
        a failed sweep (database down) is counted there and retried at the next tick."""
        return Job("settlement", self.reconcile_unsettled, every_s=every_s, timeout_s=timeout_s)

    async def reconcile_unsettled(self) -> int:
        """One settlement sweep; returns how many rows it settled."""
        if self._unsent:
            await self._flush_unsent()
        return 0 if self._settlement is None else await self._settlement.sweep()

    async def _announce_settled(self, action: StakeAction) -> None:
        trade = await Trade.get(trade_id=action.trade_id)
        await self._announce_row(trade.source, action)

    # ------------------------------------------------------------------ records
    async def _finish(
        self,
        event: SentimentScored,
        decision: Decision,
        status: str,
        reason: str,
        *,
        amount_alpha: int | None = None,
        **fields: Any,
    ) -> None:
        try:
            action = await StakeAction.create(
                trade_id=event.trade_id,
                netuid=event.netuid,
                hotkey=event.hotkey,
                direction=decision.direction,
                status=status,
                score=event.score,
                reason=reason,
                amount_tao=tao(decision.amount_rao) if decision.amount_rao else None,
                amount_alpha=None if amount_alpha is None else tao(amount_alpha),
                **fields,
            )
        except IntegrityError as exc:
            raise Retry("stake action recorded concurrently; re-reading it", defer_s=1) from exc
        await set_status(event.trade_id, status, reason)
        logger.bind(trade_id=event.trade_id, stage="stake").info("{}: {}", status, reason)
        await self._announce(event, action)

    async def _announce(
        self, event: SentimentScored, action: StakeAction, *, note: str | None = None
    ) -> None:
        await self._announce_row(event.source, action, note=note)

    async def _announce_row(
        self, source: str, action: StakeAction, *, note: str | None = None
    ) -> None:
        reason = action.reason if note is None else f"{note}: {action.reason}"
        await self._publish(
            StakeExecuted(
                trade_id=action.trade_id,
                netuid=action.netuid,
                hotkey=action.hotkey,
                source=source,
                direction=action.direction,
                status=action.status,
                amount_tao=None if action.amount_tao is None else str(action.amount_tao),
                amount_alpha=None if action.amount_alpha is None else str(action.amount_alpha),
                success=action.success,
                extrinsic_hash=action.extrinsic_hash,
                block=action.block,
                error_name=action.error_name,
                reason=reason,
            )
        )
