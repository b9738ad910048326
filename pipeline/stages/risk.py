"""Guards between a scored trade and the chain: trust only the stored rows, then cap exposure.

Each guard returns the reason it refuses (stored with the stake action and shown in the
trade's trace) or None. The pure ones run before any I/O; the stake stage calls the two
database reads under the coldkey lock, so trades of one wallet see each other's rows, and
the position cap after its one chain read. No guard looks at the trade's source: beat
re-scoring and `replay --as-new-trade` meet every one of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from tortoise.functions import Max, Sum

from pipeline.stages.decision import Direction, tao
from shared.chain.staking_types import RAO_PER_TAO, AccountState
from shared.db.models import SentimentScore, StakeAction, Trade
from shared.events import SentimentScored
from shared.settings import Settings

# Statuses whose amount is, or may be, on chain: what exposure and cooldown count
# (`included`: in a block, outcome unreadable until an operator settles it).
LIVE = ("succeeded", "submitting", "unknown", "included")
DAY = timedelta(hours=24)


# ------------------------------------------------------------------ trust
def disagreements(event: SentimentScored, trade: Trade, stored: SentimentScore) -> list[str]:
    """Where the event says something other than the stored rows (an entry anyone with Redis
    access could have written must never choose the subnet, hotkey or score)."""
    found = []
    if event.netuid != trade.netuid:
        found.append(f"netuid {event.netuid} (event) vs {trade.netuid} (stored)")
    if event.hotkey != trade.hotkey:
        found.append(f"hotkey {event.hotkey} (event) vs {trade.hotkey} (stored)")
    if event.score != stored.score:
        found.append(f"score {event.score} (event) vs {stored.score} (stored)")
    return found


# ------------------------------------------------------------------ before any I/O
def outside_allowlist(netuid: int, settings: Settings) -> str | None:
    allowed = settings.allowed_netuids()
    if allowed is None or netuid in allowed:
        return None
    listed = ",".join(str(n) for n in sorted(allowed))
    return f"netuid {netuid} is not in TRADE_NETUIDS ({listed})"


def inside_dead_band(score: int, settings: Settings) -> str | None:
    if abs(score) >= settings.min_abs_score:
        return None
    band = settings.min_abs_score
    return f"score {score} is inside the dead band (|score| < MIN_ABS_SCORE={band})"


def stale(created_at: datetime, now: datetime, settings: Settings) -> str | None:
    age_s = (now - created_at).total_seconds()
    if age_s <= settings.max_event_age_s:
        return None
    return (
        f"stale: the trade is {age_s:.0f}s old at the stake stage "
        f"(MAX_EVENT_AGE_S={settings.max_event_age_s:g})"
    )


def precheck(
    netuid: int, score: int, created_at: datetime, now: datetime, settings: Settings
) -> str | None:
    """The limits that need no I/O, in the order their reasons are most useful."""
    return (
        outside_allowlist(netuid, settings)
        or inside_dead_band(score, settings)
        or stale(created_at, now, settings)
    )


# ------------------------------------------------------------------ from stored actions
def cooling_down(last_at: datetime | None, now: datetime, settings: Settings) -> str | None:
    """The gateway's cooldown only spaces enqueues; queued, re-scored and replayed trades
    of one pair can still reach this stage back to back."""
    if last_at is None:
        return None
    ago_s = (now - last_at).total_seconds()
    if ago_s >= settings.trade_cooldown_s:
        return None
    return (
        f"cooldown: another stake action on this (netuid, hotkey) {max(ago_s, 0):.0f}s ago "
        f"(TRADE_COOLDOWN_S={settings.trade_cooldown_s})"
    )


def over_daily_limit(used_rao: int, amount_rao: int, settings: Settings) -> str | None:
    return beyond_cap(
        "daily limit",
        used_rao,
        "traded by this coldkey in the last 24 h",
        amount_rao,
        "DAILY_TRADE_LIMIT_TAO",
        settings.daily_trade_limit_tao,
    )


async def last_live_action_at(netuid: int, hotkey: str, since: datetime) -> datetime | None:
    rows = (
        await StakeAction.filter(
            netuid=netuid, hotkey=hotkey, status__in=LIVE, created_at__gte=since
        )
        .annotate(last=Max("created_at"))
        .values_list("last", flat=True)
    )
    last = rows[0] if rows else None
    return last if isinstance(last, datetime) else None


async def traded_rao(coldkey: str, since: datetime) -> int:
    """TAO (rao) this coldkey's live actions moved since `since`, both directions."""
    rows = (
        await StakeAction.filter(coldkey=coldkey, status__in=LIVE, created_at__gte=since)
        .annotate(total=Sum("amount_tao"))
        .values_list("total", flat=True)
    )
    total = rows[0] if rows else None
    return 0 if total is None else int(Decimal(str(total)) * RAO_PER_TAO)


async def check_history(
    netuid: int, hotkey: str, coldkey: str, amount_rao: int, now: datetime, settings: Settings
) -> str | None:
    """Cooldown, then the daily limit; sound only under the coldkey lock."""
    since = now - timedelta(seconds=settings.trade_cooldown_s)
    refusal = cooling_down(await last_live_action_at(netuid, hotkey, since), now, settings)
    if refusal is not None:
        return refusal
    return over_daily_limit(await traded_rao(coldkey, now - DAY), amount_rao, settings)


# ------------------------------------------------------------------ from the chain read
def over_position_cap(
    direction: Direction, amount_rao: int, account: AccountState, settings: Settings
) -> str | None:
    """An add must leave the (netuid, hotkey) stake worth at most MAX_POSITION_TAO at the
    current price; a remove only lowers exposure and is never held back."""
    if direction != "add":
        return None
    held_rao = account.stake_rao * account.alpha_price_rao // RAO_PER_TAO
    return beyond_cap(
        "position cap",
        held_rao,
        "staked here",
        amount_rao,
        "MAX_POSITION_TAO",
        settings.max_position_tao,
    )


# ------------------------------------------------------------------ shared
def beyond_cap(
    cap: str, held_rao: int, held: str, amount_rao: int, setting: str, limit_tao: float
) -> str | None:
    """The refusal when `amount_rao` on top of `held_rao` would pass `limit_tao` (the value
    of `setting`), as "<cap>: <held_rao> TAO <held> + <amount_rao> TAO would exceed
    <setting>=<limit_tao>"; None within it."""
    if held_rao + amount_rao <= int(Decimal(str(limit_tao)) * RAO_PER_TAO):
        return None
    return (
        f"{cap}: {tao(held_rao)} TAO {held} + {tao(amount_rao)} TAO would exceed "
        f"{setting}={limit_tao:g}"
    )
