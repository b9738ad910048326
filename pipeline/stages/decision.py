"""The stake decision: direction from the score's sign, size from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from shared.chain.staking_types import RAO_PER_TAO
from shared.settings import Settings

Direction = Literal["add", "remove", "none"]


@dataclass(frozen=True, slots=True)
class Decision:
    direction: Direction
    amount_rao: int  # TAO rao to stake, or the TAO value to unstake
    reason: str


def decide(score: int | None, settings: Settings) -> Decision:
    if score is None:
        return Decision("none", 0, "no usable sentiment score: no trade")
    if score == 0:
        return Decision("none", 0, "neutral sentiment (score 0): nothing to do")
    direction: Direction = "add" if score > 0 else "remove"
    amount = Decimal(str(settings.stake_amount_tao))
    if settings.stake_sizing == "proportional":
        amount = amount * Decimal(min(abs(score), 100)) / Decimal(100)
    cap = Decimal(str(settings.stake_max_tao))
    capped = amount > cap
    amount = min(amount, cap)
    rao = int((amount * RAO_PER_TAO).to_integral_value(rounding=ROUND_DOWN))
    if rao <= 0:
        return Decision("none", 0, f"score {score} sizes to 0 TAO: nothing to do")
    verb = "stake" if direction == "add" else "unstake"
    note = f" (capped at STAKE_MAX_TAO={settings.stake_max_tao:g})" if capped else ""
    return Decision(direction, rao, f"score {score}: {verb} {rao / RAO_PER_TAO:g} TAO{note}")


def alpha_for_tao(tao_rao: int, alpha_price_rao: int) -> int:
    """Alpha rao worth `tao_rao` at `alpha_price_rao` TAO rao per alpha."""
    if alpha_price_rao <= 0:
        raise ValueError("alpha price must be positive")
    return tao_rao * RAO_PER_TAO // alpha_price_rao


def tao(rao: int) -> Decimal:
    return (Decimal(rao) / RAO_PER_TAO).quantize(Decimal("0.000000001"))
