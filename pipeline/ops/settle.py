"""`python -m pipeline settle TRADE_ID --status succeeded|failed --reason TEXT`: an operator
records the outcome of a stake action the chain cannot prove by itself.

For rows the settlement sweep cannot settle: `included` (the extrinsic is in a finalized
block, but its ExtrinsicSuccess / ExtrinsicFailed event could not be read there; look the
block up in an explorer), and `submitting` / `unknown` rows left by an older release
without an extrinsic hash and mortality window (they keep the coldkey's lane closed).
A `submitting` / `unknown` row that has both is proven from the chain by the sweep; settling
it by hand needs `--force`, because it reopens the lane while the extrinsic may still be
pending. Any other row is refused. Who settled it and why is kept in its reason.
"""

from __future__ import annotations

from pipeline.stages.lane import UNSETTLED
from pipeline.stages.records import set_status
from shared.db.models import StakeAction
from shared.ids import utcnow

SETTLEABLE = (*UNSETTLED, "included")
OUTCOMES = ("succeeded", "failed")


class SettleError(Exception):
    pass


async def settle(
    trade_id: str, status: str, reason: str, by: str, *, force: bool = False
) -> StakeAction:
    """Record `status` on the trade's stake action; returns the updated row."""
    if status not in OUTCOMES:
        raise SettleError(f"--status must be one of {', '.join(OUTCOMES)}")
    reason = reason.strip()
    if not reason:
        raise SettleError("--reason must say why (what the block explorer shows)")
    action = await StakeAction.get_or_none(trade_id=trade_id)
    if action is None:
        raise SettleError(f"no stake action for trade {trade_id}")
    if action.status not in SETTLEABLE:
        raise SettleError(
            f"trade {trade_id} is {action.status}: only unsettled (submitting, unknown) or "
            "included stake actions can be settled by hand"
        )
    provable = None not in (action.extrinsic_hash, action.era_start_block, action.era_end_block)
    if action.status in UNSETTLED and provable and not force:
        raise SettleError(
            f"trade {trade_id} is {action.status} with its extrinsic hash and mortality window "
            "stored: the settlement sweep proves its outcome from the chain, and settling it "
            "by hand reopens the coldkey's lane while it may still be pending. Use --force "
            "only once you know it can no longer be included"
        )
    before = f"was {action.status}: {action.reason or '-'}"[:600]
    text = f"settled by operator {by}: {reason} ({before})"
    updated = await StakeAction.filter(id=action.id, status=action.status).update(
        status=status,
        success=status == "succeeded",
        message=f"settled by operator {by}",
        reason=text,
        updated_at=utcnow(),
    )
    if not updated:
        raise SettleError(f"trade {trade_id}'s stake action changed meanwhile; look again")
    await action.refresh_from_db()
    await set_status(trade_id, status, text)
    return action
