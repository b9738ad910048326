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
  with the row before it is sent (pipeline/stages/executor.py); a row left `submitting`
  or `unknown` is settled only by finding that hash in a block
  (pipeline/stages/settlement.py), never from stake, balance or nonce changes, and never
  resubmitted; a failure or cancellation after the row is stored and before the submit
  began records it `failed` "not sent";
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
- every decision, including "skipped, and why", is stored and published
  (`Outcomes`, pipeline/stages/settlement.py).

Here: parse the entry, load the trade's stored rows, decide, run the risk checks (those
sound only under the coldkey's lease while holding it), size the order from the chain
read, and hand it to the executor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from pipeline.jobs import Job
from pipeline.stages import risk
from pipeline.stages.decision import Decision, alpha_for_tao, decide, tao
from pipeline.stages.executor import StakeExecutor
from pipeline.stages.lane import UNSETTLED, ColdkeyLane, Lease, ensure_no_unsettled
from pipeline.stages.records import Publisher, parse_event
from pipeline.stages.settlement import Outcomes, Settlement, settlement_job
from pipeline.worker import Drop, Retry, StreamEntry
from shared.chain.staking_types import OrderDirection, StakeClient, StakeOrder, limit_price_rao
from shared.db.models import SentimentScore, StakeAction, Trade
from shared.events import SentimentScored
from shared.ids import utcnow
from shared.settings import Settings

# `included`: in a finalized block, outcome unreadable; never submitted again.
TERMINAL = {"succeeded", "failed", "skipped", "dry_run", "rejected", "included"}
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
        self._staker = staker
        self._settings = settings
        self._wallet_problem = wallet_problem or "no wallet configured"
        self._lane = ColdkeyLane.from_settings(redis, settings)
        self._outcomes = Outcomes(publish, settings)
        self._executor = StakeExecutor(self._lane, self._outcomes, settings)
        self._settlement = (
            None
            if staker is None
            else Settlement(staker, self._outcomes.announce_settled, settings)
        )

    async def handle(self, entry: StreamEntry) -> None:
        event = parse_event(SentimentScored, entry)
        await self._executor.flush_unsent()
        action = await StakeAction.get_or_none(trade_id=event.trade_id)
        if action is not None and action.status in TERMINAL:
            logger.bind(trade_id=event.trade_id).info(
                "already executed ({}); not submitting again", action.status
            )
            await self._outcomes.announce(event, action, note="already executed")
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
            await self._outcomes.finish(trusted, Decision("none", 0, reason), "rejected", reason)
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
        await self._outcomes.finish(trusted, Decision("none", 0, reason), "rejected", reason)

    # ------------------------------------------------------------------ decision
    async def _execute(self, event: SentimentScored, trade: Trade) -> None:
        """`event` carries the stored netuid, hotkey and score (see `handle`)."""
        settings = self._settings
        decision = decide(event.score, settings)
        if decision.direction == "none":
            await self._outcomes.finish(event, decision, "skipped", decision.reason)
            return
        assert event.score is not None  # a direction needs a score
        refusal = risk.precheck(event.netuid, event.score, trade.created_at, utcnow(), settings)
        if refusal is not None:
            await self._outcomes.finish(event, decision, "skipped", refusal)
            return
        if not settings.staking_enabled:
            await self._outcomes.finish(
                event, decision, "skipped", "staking disabled (STAKING_ENABLED=false)"
            )
            return
        if self._staker is None:
            await self._outcomes.finish(
                event, decision, "skipped", f"{self._wallet_problem}: nothing submitted"
            )
            return
        staker = self._staker
        # Before any chain read or lease: while the lane is closed (an unsettled extrinsic,
        # up to its mortality window) a waiting trade costs one query per retry.
        await ensure_no_unsettled(staker.coldkey)
        async with self._lane.hold(staker.coldkey) as lease:
            await self._under_lease(event, decision, staker, trade, lease)

    async def _under_lease(
        self,
        event: SentimentScored,
        decision: Decision,
        staker: StakeClient,
        trade: Trade,
        lease: Lease,
    ) -> None:
        """The checks sound only under the coldkey's lease, the chain read that sizes the
        order, then the executor."""
        if await StakeAction.exists(trade_id=event.trade_id):
            # Another consumer executed this trade while we waited for the coldkey lock.
            raise Retry("stake action recorded while waiting for the lock", defer_s=0)
        await self._lane.ensure_open(lease)
        # The wait for the lease may have taken the trade past its age limit.
        refusal = risk.stale(trade.created_at, utcnow(), self._settings)
        if refusal is not None:
            await self._outcomes.finish(event, decision, "skipped", refusal, coldkey=staker.coldkey)
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
            await self._outcomes.finish(event, decision, "skipped", refusal, coldkey=staker.coldkey)
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
            await self._outcomes.finish(event, decision, "skipped", refusal, **fields)
            return
        direction: OrderDirection = "add" if decision.direction == "add" else "remove"
        try:
            limit = limit_price_rao(
                direction, event.netuid, account.alpha_price_rao, self._settings.slippage_tolerance
            )
        except ValueError as exc:  # no usable price: nothing can be sized or protected
            await self._outcomes.finish(
                event, decision, "skipped", f"{exc}: nothing submitted", **fields
            )
            return
        if decision.direction == "add":
            spendable = account.free_rao - account.existential_deposit_rao
            if spendable < decision.amount_rao:
                await self._outcomes.finish(
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
                await self._outcomes.finish(
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
            await self._outcomes.finish(
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
        await self._executor.execute(
            event,
            decision,
            order,
            staker,
            lease,
            nonce=account.nonce,
            amount_alpha=amount_alpha,
            fields=fields,
        )

    def settlement_job(self, *, every_s: float, timeout_s: float) -> Job:
        """This wallet's settlement sweep (pipeline/stages/settlement.py) as a worker job."""
        return settlement_job(
            self._settlement, self._executor.flush_unsent, every_s=every_s, timeout_s=timeout_s
        )
