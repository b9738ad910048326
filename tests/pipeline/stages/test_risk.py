"""The stake stage's guards one by one: trust in stored rows and each risk limit."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from pipeline.stages import risk
from shared.chain.staking_types import AccountState
from shared.db.models import SentimentScore, StakeAction, Trade
from shared.events import SentimentScored
from shared.ids import new_id, utcnow
from shared.settings import Settings
from tests.conftest import make_settings
from tests.fakes.chain import ALICE, BOB
from tests.fakes.staker import COLDKEY

TAO = 1_000_000_000


def _settings(**overrides: Any) -> Settings:
    return make_settings("redis://x", "sqlite://:memory:", **overrides)


def _account(stake_rao: int, price_rao: int = TAO // 2) -> AccountState:
    return AccountState(
        coldkey=COLDKEY,
        free_rao=10 * TAO,
        stake_rao=stake_rao,
        alpha_price_rao=price_rao,
        nonce=0,
        block=100,
    )


class TestDisagreements:
    def test_each_field_is_named_with_both_values(self) -> None:
        trade = Trade(trade_id="t", netuid=3, hotkey=ALICE, source="api")
        stored = SentimentScore(trade_id="t", netuid=3, score=0, backend="llm")
        event = SentimentScored(
            trade_id="t", netuid=7, hotkey=BOB, source="api", score=100, backend="llm"
        )
        assert risk.disagreements(event, trade, stored) == [
            "netuid 7 (event) vs 3 (stored)",
            f"hotkey {BOB} (event) vs {ALICE} (stored)",
            "score 100 (event) vs 0 (stored)",
        ]

    def test_agreement_is_empty(self) -> None:
        trade = Trade(trade_id="t", netuid=3, hotkey=ALICE, source="api")
        stored = SentimentScore(trade_id="t", netuid=3, score=None, backend="none")
        event = SentimentScored(
            trade_id="t", netuid=3, hotkey=ALICE, source="replay", score=None, backend="none"
        )
        assert risk.disagreements(event, trade, stored) == []


class TestPrecheck:
    def test_allowlist(self) -> None:
        settings = _settings(trade_netuids="18, 1")
        assert risk.outside_allowlist(18, settings) is None
        assert risk.outside_allowlist(3, settings) == "netuid 3 is not in TRADE_NETUIDS (1,18)"
        assert risk.outside_allowlist(3, _settings()) is None  # unset: every subnet

    @pytest.mark.parametrize(
        ("score", "inside"), [(19, True), (-19, True), (20, False), (-20, False)]
    )
    def test_dead_band(self, score: int, inside: bool) -> None:
        reason = risk.inside_dead_band(score, _settings(min_abs_score=20))
        assert (reason is not None) is inside
        if inside:
            assert reason == f"score {score} is inside the dead band (|score| < MIN_ABS_SCORE=20)"

    def test_stale(self) -> None:
        now = utcnow()
        settings = _settings(max_event_age_s=900)
        assert risk.stale(now - timedelta(seconds=899), now, settings) is None
        reason = risk.stale(now - timedelta(seconds=1000), now, settings)
        assert reason is not None and reason.startswith("stale: the trade is 1000s old")

    def test_order_allowlist_then_dead_band_then_age(self) -> None:
        now = utcnow()
        old = now - timedelta(hours=1)
        settings = _settings(trade_netuids="18", min_abs_score=20, max_event_age_s=60)
        assert "TRADE_NETUIDS" in (risk.precheck(3, 5, old, now, settings) or "")
        assert "dead band" in (risk.precheck(18, 5, old, now, settings) or "")
        assert "stale" in (risk.precheck(18, 50, old, now, settings) or "")
        assert risk.precheck(18, 50, now, now, settings) is None


class TestLimits:
    def test_cooldown(self) -> None:
        now = utcnow()
        settings = _settings(trade_cooldown_s=300)
        assert risk.cooling_down(None, now, settings) is None
        assert risk.cooling_down(now - timedelta(seconds=301), now, settings) is None
        reason = risk.cooling_down(now - timedelta(seconds=10), now, settings)
        assert reason is not None and "10s ago (TRADE_COOLDOWN_S=300)" in reason

    def test_daily_limit_allows_up_to_the_limit(self) -> None:
        settings = _settings(daily_trade_limit_tao=5)
        assert risk.over_daily_limit(4 * TAO, TAO, settings) is None
        reason = risk.over_daily_limit(4 * TAO + 1, TAO, settings)
        assert reason == (
            "daily limit: 4.000000001 TAO traded by this coldkey in the last 24 h "
            "+ 1.000000000 TAO would exceed DAILY_TRADE_LIMIT_TAO=5"
        )

    def test_position_cap_at_the_current_price(self) -> None:
        settings = _settings(max_position_tao=10)
        # 18 alpha at 0.5 TAO = 9 TAO held: one more TAO reaches the cap, not beyond.
        assert risk.over_position_cap("add", TAO, _account(18 * TAO), settings) is None
        reason = risk.over_position_cap("add", TAO, _account(19 * TAO), settings)
        assert reason == (
            "position cap: 9.500000000 TAO staked here + 1.000000000 TAO would exceed "
            "MAX_POSITION_TAO=10"
        )
        # The price, not the alpha count, decides: 19 alpha at 0.4 TAO is 7.6 TAO.
        assert (
            risk.over_position_cap("add", TAO, _account(19 * TAO, 4 * TAO // 10), settings) is None
        )

    def test_removes_are_never_held_by_the_position_cap(self) -> None:
        settings = _settings(max_position_tao=1)
        assert risk.over_position_cap("remove", TAO, _account(100 * TAO), settings) is None


async def _action(trade_id: str, status: str, amount: str, **fields: Any) -> StakeAction:
    values: dict[str, Any] = {"netuid": 3, "hotkey": ALICE, "coldkey": COLDKEY}
    values.update(fields)
    trade = await Trade.create(
        trade_id=trade_id, netuid=values["netuid"], hotkey=values["hotkey"], source="api"
    )
    created_at = values.pop("created_at", None)
    action = await StakeAction.create(
        trade=trade, direction="add", status=status, amount_tao=Decimal(amount), **values
    )
    if created_at is not None:
        await StakeAction.filter(id=action.id).update(created_at=created_at)
    return action


class TestHistory:
    async def test_traded_counts_live_actions_of_this_coldkey_in_the_window(self, orm: str) -> None:
        now = utcnow()
        await _action(new_id(), "succeeded", "1.5")
        await _action(new_id(), "unknown", "1")
        # In a block, outcome unreadable: may have moved its amount (one coldkey has at most
        # one submitting/unknown row: the database refuses a second).
        await _action(new_id(), "included", "0.5", hotkey=BOB, netuid=4)
        await _action(new_id(), "failed", "3")  # never moved anything
        await _action(new_id(), "skipped", "3")
        await _action(new_id(), "dry_run", "3")
        await _action(new_id(), "succeeded", "3", coldkey="5SomeOtherColdkey")
        await _action(new_id(), "succeeded", "3", created_at=now - timedelta(hours=25))
        assert await risk.traded_rao(COLDKEY, now - risk.DAY) == 3 * TAO

    async def test_last_live_action_on_the_pair(self, orm: str) -> None:
        now = utcnow()
        since = now - timedelta(seconds=300)
        assert await risk.last_live_action_at(3, ALICE, since) is None
        await _action(new_id(), "failed", "1")
        await _action(new_id(), "succeeded", "1", netuid=4)
        await _action(new_id(), "succeeded", "1", created_at=now - timedelta(seconds=400))
        assert await risk.last_live_action_at(3, ALICE, since) is None
        recent = await _action(new_id(), "unknown", "1", created_at=now - timedelta(seconds=30))
        await _action(new_id(), "succeeded", "1", created_at=now - timedelta(seconds=90))
        last = await risk.last_live_action_at(3, ALICE, since)
        await recent.refresh_from_db()
        assert last == recent.created_at

    async def test_check_history_cooldown_before_daily_limit(self, orm: str) -> None:
        now = utcnow()
        settings = _settings(trade_cooldown_s=300, daily_trade_limit_tao=5)
        await _action(new_id(), "succeeded", "4.5", created_at=now - timedelta(seconds=30))
        cooldown = await risk.check_history(3, ALICE, COLDKEY, TAO, now, settings)
        assert cooldown is not None and cooldown.startswith("cooldown")
        daily = await risk.check_history(4, ALICE, COLDKEY, TAO, now, settings)
        assert daily is not None and daily.startswith("daily limit: 4.500000000 TAO")
        assert await risk.check_history(4, ALICE, COLDKEY, TAO // 2, now, settings) is None
