"""stake stage: sentiment_scored → add_stake / unstake → stake action stored → stake_executed.

Safety rules (the stage acts with real money):
- idempotent per trade: a `stake_actions` row, unique per trade, is written
  *before* submitting; a redelivery, a replay or a second consumer finds it and
  never submits again ("already executed");
- a row left `submitting` or `unknown` (crash or timeout mid-submit) is
  reconciled from chain state: the coldkey's nonce moved past the one recorded
  before submitting → the extrinsic was included (its effect is read from the
  stake change); nonce unchanged and the transaction's era (mortality period)
  over → it can never land, recorded as failed; otherwise retried later. It is
  never resubmitted blindly;
- one extrinsic at a time per coldkey (a Redis lock), which also makes the
  nonce comparison sound;
- kill switch (STAKING_ENABLED), dry run (STAKE_DRY_RUN), amount capped at
  STAKE_MAX_TAO, free balance checked before adding, held stake checked (and
  the TAO amount converted to alpha at the current price) before removing;
- every decision, including "skipped, and why", is stored and published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import LockError
from tortoise.exceptions import IntegrityError

from pipeline.stages.decision import Decision, alpha_for_tao, decide, tao
from pipeline.stages.records import Publisher, ensure_trade, parse_event, set_status
from pipeline.worker import Retry, StreamEntry
from shared.chain.staking_types import RAO_PER_TAO, AccountState, StakeClient, StakeOutcome
from shared.constants import KEY_COLDKEY_LOCK
from shared.db.models import StakeAction, Trade
from shared.errors import ChainError
from shared.events import SentimentScored, StakeExecuted
from shared.ids import utcnow
from shared.settings import Settings

TERMINAL = {"succeeded", "failed", "skipped", "dry_run"}
UNSETTLED = {"submitting", "unknown"}
ERA_PERIOD_BLOCKS = 128  # bittensor's DEFAULT_PERIOD: an unincluded extrinsic dies after it
ERA_MARGIN_BLOCKS = 4


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
        self._local_locks: dict[str, asyncio.Lock] = {}
        # Wait for the coldkey as long as the handler's time allows after its own submit.
        self._lock_wait_s = max(
            5.0, settings.worker_handler_timeout_s - settings.stake_submit_timeout_s - 10
        )
        self._staker = staker
        self._publish = publish
        self._settings = settings
        self._wallet_problem = wallet_problem or "no wallet configured"

    async def handle(self, entry: StreamEntry) -> None:
        event = parse_event(SentimentScored, entry)
        await ensure_trade(event)
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
        await self._execute(event)

    # ------------------------------------------------------------------ decision
    async def _execute(self, event: SentimentScored) -> None:
        settings = self._settings
        decision = decide(event.score, settings)
        if decision.direction == "none":
            await self._finish(event, decision, "skipped", decision.reason)
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
        async with self._coldkey_lock(staker.coldkey):
            await self._submit(event, decision, staker)

    @contextlib.asynccontextmanager
    async def _coldkey_lock(self, coldkey: str) -> AsyncIterator[None]:
        """One extrinsic at a time per coldkey: queue in-process first (waiting here costs
        no delivery), then across processes with a Redis lock."""
        local = self._local_locks.setdefault(coldkey, asyncio.Lock())
        async with local:
            lock = self._redis.lock(
                f"{KEY_COLDKEY_LOCK}{coldkey}",
                timeout=self._lock_ttl_s,
                blocking_timeout=self._lock_wait_s,
            )
            try:
                acquired = await lock.acquire()
            except LockError as exc:
                raise Retry("coldkey lock unavailable", defer_s=5) from exc
            if not acquired:
                raise Retry("another process holds this coldkey's lock", defer_s=5)
            try:
                yield
            finally:
                try:
                    await lock.release()
                except LockError:
                    logger.warning("coldkey lock expired before release")

    async def _submit(
        self, event: SentimentScored, decision: Decision, staker: StakeClient
    ) -> None:
        if await StakeAction.exists(trade_id=event.trade_id):
            # Another consumer executed this trade while we waited for the coldkey lock.
            raise Retry("stake action recorded while waiting for the lock", defer_s=0)
        account = await staker.account(event.netuid, event.hotkey)
        fields: dict[str, Any] = {
            "coldkey": account.coldkey,
            "nonce_before": account.nonce,
            "block_before": account.block,
            "stake_before_rao": account.stake_rao,
            "balance_before_rao": account.free_rao,
        }
        amount_alpha: int | None = None
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
        if self._settings.stake_dry_run:
            what = "add_stake" if decision.direction == "add" else "unstake"
            await self._finish(
                event,
                decision,
                "dry_run",
                f"STAKE_DRY_RUN: would {what} ({decision.reason})",
                amount_alpha=amount_alpha,
                **fields,
            )
            return
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
                **fields,
            )
        except IntegrityError as exc:
            # Another consumer holds this trade; look again once it has settled.
            raise Retry(
                "stake action already being executed by another consumer", defer_s=2
            ) from exc
        await set_status(event.trade_id, "submitting")
        log = logger.bind(trade_id=event.trade_id, stage="stake")
        log.info("submitting {} on netuid {}", decision.reason, event.netuid)
        try:
            if decision.direction == "add":
                outcome = await asyncio.wait_for(
                    staker.add_stake(event.netuid, event.hotkey, decision.amount_rao),
                    self._settings.stake_submit_timeout_s,
                )
            else:
                assert amount_alpha is not None
                outcome = await asyncio.wait_for(
                    staker.unstake(event.netuid, event.hotkey, amount_alpha),
                    self._settings.stake_submit_timeout_s,
                )
        except (ChainError, TimeoutError) as exc:
            reason = f"outcome unknown ({type(exc).__name__}: {exc}); will reconcile from chain"
            action.status, action.reason = "unknown", reason
            await action.save(update_fields=["status", "reason", "updated_at"])
            await set_status(event.trade_id, "unknown", reason)
            logger.bind(trade_id=event.trade_id, stage="stake").warning("{}", reason)
            return
        await self._record_outcome(event, action, outcome)

    async def _record_outcome(
        self, event: SentimentScored, action: StakeAction, outcome: StakeOutcome
    ) -> None:
        action.status = "succeeded" if outcome.success else "failed"
        action.success = outcome.success
        action.message = outcome.message[:2000]
        action.error_name = outcome.error_name
        action.extrinsic_hash = outcome.extrinsic_hash
        action.block_hash = outcome.block_hash
        action.block = outcome.block
        action.fee_rao = outcome.fee_rao
        if not outcome.success:
            action.reason = f"chain rejected the extrinsic: {outcome.error_name or outcome.message}"
        await action.save()
        await set_status(event.trade_id, action.status, action.reason)
        logger.bind(trade_id=event.trade_id, stage="stake").info(
            "{} {}: {}", action.direction, action.status, outcome.message
        )
        await self._announce(event, action)

    # ------------------------------------------------------------------ reconciliation
    async def run_reconciler(self, stop: asyncio.Event, *, every_s: float = 30.0) -> None:
        """Settle unsettled stake actions from chain state until `stop` is set."""
        while not stop.is_set():
            try:
                await self.reconcile_unsettled()
            except Exception as exc:  # a failed sweep is retried at the next one
                logger.opt(exception=exc).warning("reconciliation sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def reconcile_unsettled(self) -> int:
        """Settle `submitting`/`unknown` rows whose submission can no longer be running.

        Returns how many were settled. Rows still undecidable (nonce unchanged, era not
        over) are left for a later sweep.
        """
        if self._staker is None:
            return 0
        cutoff = utcnow() - timedelta(
            seconds=self._settings.stake_submit_timeout_s + self._settle_margin_s
        )
        # Only this wallet's rows: another coldkey's nonce says nothing about them.
        rows = await StakeAction.filter(
            status__in=UNSETTLED, updated_at__lt=cutoff, coldkey=self._staker.coldkey
        )
        settled = 0
        for action in rows:
            async with self._coldkey_lock(self._staker.coldkey):
                await action.refresh_from_db()
                if action.status in UNSETTLED and await self._reconcile(action):
                    settled += 1
        return settled

    async def _reconcile(self, action: StakeAction) -> bool:
        assert self._staker is not None
        log = logger.bind(trade_id=action.trade_id, stage="stake")
        if action.nonce_before is None:
            log.error("unsettled stake action without its recorded nonce; needs an operator")
            return False
        account = await self._staker.account(action.netuid, action.hotkey)
        if account.nonce > action.nonce_before:
            # Extrinsics of this coldkey go one at a time, so the nonce recorded before
            # submitting was this one's: it was included. Its effect decides the outcome.
            moved = _stake_moved(action, account)
            action.status = "succeeded" if moved else "failed"
            action.success = moved
            action.reason = (
                f"reconciled from chain state: nonce {action.nonce_before}→{account.nonce}, "
                f"stake {action.stake_before_rao}→{account.stake_rao} alpha rao"
            )
        elif action.block_before is not None and account.block > (
            action.block_before + ERA_PERIOD_BLOCKS + ERA_MARGIN_BLOCKS
        ):
            action.status, action.success = "failed", False
            action.reason = (
                "reconciled from chain state: never included (nonce unused and the "
                "transaction's era is over); not resubmitted"
            )
        else:
            log.info("stake action still unsettled: the transaction may yet be included")
            return False
        await action.save()
        await set_status(action.trade_id, action.status, action.reason)
        log.warning("{}", action.reason)
        trade = await Trade.get(trade_id=action.trade_id)
        await self._announce_row(trade.source, action)
        return True

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


def _stake_moved(action: StakeAction, account: AccountState) -> bool:
    """Whether the stake moved by at least half of what the extrinsic would move.

    Half, not any change: emissions also add alpha to a stake, and must not pass for an
    add that was not applied.
    """
    before = action.stake_before_rao or 0
    if action.direction == "add":
        tao_rao = int((action.amount_tao or 0) * RAO_PER_TAO)
        expected = alpha_for_tao(tao_rao, account.alpha_price_rao) if tao_rao else 1
        return account.stake_rao - before >= max(1, expected // 2)
    expected = int((action.amount_alpha or 0) * RAO_PER_TAO) or 1
    return before - account.stake_rao >= max(1, expected // 2)
