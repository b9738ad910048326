"""How stake actions end: recorded and announced, or settled from the chain's own record.

A `submitting` / `unknown` row carries the hash of its signed extrinsic and the blocks
it could be included in (its mortality window). The only evidence accepted is that hash
in a block, with its ExtrinsicSuccess / ExtrinsicFailed event; the hash absent from
every block of a window the chain has left behind means "not included". Stake, balance
and nonce changes are never read as an outcome: emissions, other trades and other
signers move them too.

The hash in a finalized block whose outcome cannot be read there (its events pruned, or
no ExtrinsicSuccess / ExtrinsicFailed event for it: at once; an error reply, or events that
cannot be decoded: after a few consecutive sweeps that all found it so) is recorded
`included`: nothing of it can still be pending, so the coldkey's lane reopens,
while its amount still counts as exposure (cooldown, daily limit) until an operator
settles it (`python -m pipeline settle`). A row without a stored hash and window (left by
an older release) cannot be proven either way and keeps the lane closed until an
operator settles it.

A sweep is bounded (rows per sweep, blocks per search, a timeout per chain call) and a
row that raises is counted on the row (`settle_attempts`, `settle_error`) and skipped,
never stopping the rows behind it; it runs as a job of the worker (`settlement_job`).

`Outcomes` records the ends the stage and the executor reach (a decision that sends
nothing: `skipped`, `rejected`, `dry_run`; an outcome the submitter read) and announces
stake actions on stake_executed, the rows settled here included: always from the stored
row, after the row and the trade's status are stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from loguru import logger
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from pipeline.jobs import Job
from pipeline.stages.decision import Decision, tao
from pipeline.stages.lane import UNSETTLED
from pipeline.stages.records import Publisher, set_status
from pipeline.worker import Retry
from shared.chain.staking_types import Inclusion, StakeClient, StakeOutcome
from shared.db.models import StakeAction, Trade
from shared.events import SentimentScored, StakeExecuted
from shared.ids import utcnow
from shared.settings import Settings

SWEEP_LIMIT = 50
# Blocks past the window's end before "not found" is final (a late finality notice).
NOT_INCLUDED_MARGIN_BLOCKS = 4
# Consecutive sweeps of a row that must all find its extrinsic with the outcome unreadable
# for a transient reason (an error reply, undecodable events) before it is recorded
# `included` (pruned state or a missing event: at once). Counted per row in this process,
# apart from `settle_attempts` (which counts every failed sweep of the row).
UNREADABLE_ATTEMPTS = 3
SETTLE_COMMAND = "python -m pipeline settle {trade_id} --status succeeded|failed --reason TEXT"

Announce = Callable[[StakeAction], Awaitable[None]]


class SettlementError(Exception):
    """A row that cannot be settled as it stands (recorded on the row, retried later)."""


class OutcomeNotReadableYet(SettlementError):
    """Found, its outcome unreadable for a reason a later sweep may not meet."""


async def record_outcome(action: StakeAction, outcome: StakeOutcome, reason: str | None) -> bool:
    """Store a proven outcome on a still-unsettled row; False when another path (the
    submitter or another sweep) settled it first. `action` is updated in place."""
    status = "succeeded" if outcome.success else "failed"
    values: dict[str, object] = {
        "status": status,
        "success": outcome.success,
        "message": outcome.message[:2000],
        "error_name": outcome.error_name,
        "block_hash": outcome.block_hash,
        "block": outcome.block,
        "fee_rao": outcome.fee_rao,
        "updated_at": utcnow(),
    }
    if outcome.extrinsic_hash is not None:
        values["extrinsic_hash"] = outcome.extrinsic_hash
    if reason is not None:
        values["reason"] = reason
    updated = await StakeAction.filter(id=action.id, status__in=UNSETTLED).update(**values)
    if not updated:
        return False
    await action.refresh_from_db()
    await set_status(action.trade_id, action.status, action.reason)
    return True


def failure_reason(outcome: StakeOutcome, slippage_tolerance: float) -> str:
    if outcome.error_name == "SlippageTooHigh":
        return (
            "price moved beyond the limit (SLIPPAGE_TOLERANCE="
            f"{slippage_tolerance:g}): SlippageTooHigh; not retried"
        )
    return f"chain rejected the extrinsic: {outcome.error_name or outcome.message}"


async def store_action(
    event: SentimentScored,
    decision: Decision,
    status: str,
    reason: str,
    *,
    amount_alpha: int | None = None,
    **fields: Any,
) -> StakeAction:
    """Insert the trade's stake action (`IntegrityError` when the database refuses it: one
    row per trade, one unsettled row per coldkey). `event` carries the stored netuid,
    hotkey and score."""
    return await StakeAction.create(
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


def stake_executed(action: StakeAction, source: str, *, note: str | None = None) -> StakeExecuted:
    """The stake_executed event of a stored action; `note` goes before its reason."""
    reason = action.reason if note is None else f"{note}: {action.reason}"
    return StakeExecuted(
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


async def settled_event(action: StakeAction) -> StakeExecuted:
    """The stake_executed event of an action settled apart from its trade's entry (by a
    sweep or an operator): the source comes from the trade's row."""
    trade = await Trade.get(trade_id=action.trade_id)
    return stake_executed(action, trade.source)


class Outcomes:
    """Ends a trade's stake action: the row and the trade's status are stored, then the
    action is announced (never an event for a record that is not committed)."""

    def __init__(self, publish: Publisher, settings: Settings) -> None:
        self._publish = publish
        self._settings = settings

    async def finish(
        self,
        event: SentimentScored,
        decision: Decision,
        status: str,
        reason: str,
        *,
        amount_alpha: int | None = None,
        **fields: Any,
    ) -> None:
        """Record a decision that sends nothing (`skipped`, `rejected`, `dry_run`)."""
        try:
            action = await store_action(
                event, decision, status, reason, amount_alpha=amount_alpha, **fields
            )
        except IntegrityError as exc:
            raise Retry("stake action recorded concurrently; re-reading it", defer_s=1) from exc
        await set_status(event.trade_id, status, reason)
        logger.bind(trade_id=event.trade_id, stage="stake").info("{}: {}", status, reason)
        await self.announce(event, action)

    async def record(
        self, event: SentimentScored, action: StakeAction, outcome: StakeOutcome
    ) -> None:
        """Record the outcome the submitter read back from the chain."""
        reason = (
            None if outcome.success else failure_reason(outcome, self._settings.slippage_tolerance)
        )
        log = logger.bind(trade_id=event.trade_id, stage="stake")
        if not await record_outcome(action, outcome, reason):
            log.info("stake action was settled meanwhile; not recorded twice")
            return
        log.info("{} {}: {}", action.direction, action.status, outcome.message)
        await self.announce(event, action)

    async def announce(
        self, event: SentimentScored, action: StakeAction, *, note: str | None = None
    ) -> None:
        await self._publish(stake_executed(action, event.source, note=note))

    async def announce_settled(self, action: StakeAction) -> None:
        await self._publish(await settled_event(action))


class Settlement:
    """Settles this wallet's unsettled stake actions by their extrinsic hash."""

    def __init__(
        self,
        staker: StakeClient,
        announce: Announce,
        settings: Settings,
        *,
        limit: int = SWEEP_LIMIT,
    ) -> None:
        self._staker = staker
        self._announce = announce
        # A row younger than this may still be in its submitter's hands.
        self._min_age = timedelta(seconds=settings.stake_settle_after_s)
        self._slippage_tolerance = settings.slippage_tolerance
        self._limit = limit
        # action id -> last block searched: each sweep goes on from there.
        self._scanned: dict[int, int] = {}
        # action id -> consecutive sweeps that found its extrinsic, outcome unreadable.
        self._unreadable: dict[int, int] = {}

    async def sweep(self) -> int:
        """Settle what can be proven now; returns how many rows were settled."""
        cutoff = utcnow() - self._min_age
        rows = (
            await StakeAction.filter(
                status__in=UNSETTLED, coldkey=self._staker.coldkey, updated_at__lt=cutoff
            )
            .order_by("updated_at", "id")
            .limit(self._limit)
        )
        settled = 0
        for action in rows:
            try:
                if await self._settle(action):
                    settled += 1
            except Exception as exc:
                if not isinstance(exc, OutcomeNotReadableYet):
                    self._unreadable.pop(action.id, None)  # no longer consecutive
                error = f"{type(exc).__name__}: {exc}"[:1000]
                await StakeAction.filter(id=action.id).update(
                    settle_attempts=F("settle_attempts") + 1, settle_error=error
                )
                logger.bind(trade_id=action.trade_id, stage="stake").opt(exception=exc).warning(
                    "stake action could not be settled; will try again", error=error
                )
        return settled

    async def _settle(self, action: StakeAction) -> bool:
        log = logger.bind(trade_id=action.trade_id, stage="stake")
        start, end, extrinsic_hash = (
            action.era_start_block,
            action.era_end_block,
            action.extrinsic_hash,
        )
        if extrinsic_hash is None or start is None or end is None:
            raise SettlementError(
                "no extrinsic hash and mortality window recorded (left by an older release): "
                "its outcome cannot be proven and the coldkey's lane stays closed; needs an "
                "operator: " + SETTLE_COMMAND.format(trade_id=action.trade_id)
            )
        first = max(start, self._scanned.get(action.id, start - 1) + 1)
        search = await self._staker.find_extrinsic(extrinsic_hash, first, end)
        if search.included is None:
            self._unreadable.pop(action.id, None)  # read, or not found: no longer consecutive
        if search.outcome is not None:
            outcome = search.outcome
            reason = f"settled from the chain: extrinsic found in block {outcome.block}"
            if not outcome.success:
                reason += "; " + failure_reason(outcome, self._slippage_tolerance)
            return await self._finish(action, outcome, reason)
        if search.included is not None:
            return await self._included(action, search.included)
        self._scanned[action.id] = search.scanned_to
        if search.scanned_to >= end and search.head > end + NOT_INCLUDED_MARGIN_BLOCKS:
            outcome = StakeOutcome(
                success=False,
                message="not included",
                error_name=None,
                extrinsic_hash=extrinsic_hash,
            )
            reason = (
                f"not included: extrinsic {extrinsic_hash} is in no block of its window "
                f"[{start}, {end}] and can no longer be; not resubmitted"
            )
            return await self._finish(action, outcome, reason)
        log.info(
            "stake action still unsettled: its window is open",
            scanned_to=search.scanned_to,
            era_end_block=end,
        )
        return False

    async def _included(self, action: StakeAction, found: Inclusion) -> bool:
        if found.transient:
            reads = self._unreadable.get(action.id, 0) + 1
            if reads < UNREADABLE_ATTEMPTS:
                self._unreadable[action.id] = reads
                raise OutcomeNotReadableYet(
                    f"found in block {found.block}, its outcome not readable yet "
                    f"({reads} of {UNREADABLE_ATTEMPTS} tries): {found.problem}"
                )
        self._unreadable.pop(action.id, None)
        self._scanned.pop(action.id, None)
        reason = (
            f"included in block {found.block} (extrinsic {found.index}); outcome unreadable "
            "(events pruned?); check the block explorer, then record it with: "
            + SETTLE_COMMAND.format(trade_id=action.trade_id)
        )
        updated = await StakeAction.filter(id=action.id, status__in=UNSETTLED).update(
            status="included",
            success=None,
            message="included; outcome unreadable",
            block=found.block,
            block_hash=found.block_hash,
            reason=reason,
            settle_error=found.problem[:1000],
            updated_at=utcnow(),
        )
        if not updated:
            return False
        await action.refresh_from_db()
        await set_status(action.trade_id, "included", reason)
        logger.bind(trade_id=action.trade_id, stage="stake").error(
            "stake action included with an unreadable outcome; needs an operator",
            block=found.block,
            problem=found.problem,
        )
        await self._announce(action)
        return True

    async def _finish(self, action: StakeAction, outcome: StakeOutcome, reason: str) -> bool:
        self._scanned.pop(action.id, None)
        if not await record_outcome(action, outcome, reason):
            return False
        logger.bind(trade_id=action.trade_id, stage="stake").warning(
            "stake action settled", status=action.status, reason=reason
        )
        await self._announce(action)
        return True


def settlement_job(
    settlement: Settlement | None,
    flush_unsent: Callable[[], Awaitable[None]],
    *,
    every_s: float,
    timeout_s: float,
) -> Job:
    """The settlement sweep as a job of the worker (its drain, health key and metrics);
    a failed sweep (database down) is counted there and retried at the next tick. Each
    run first records the rows the executor could not yet record as never sent."""

    async def reconcile_unsettled() -> int:
        """One settlement sweep; returns how many rows it settled."""
        await flush_unsent()
        return 0 if settlement is None else await settlement.sweep()

    return Job("settlement", reconcile_unsettled, every_s=every_s, timeout_s=timeout_s)
