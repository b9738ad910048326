"""`python -m pipeline settle`: an operator records an outcome the chain cannot prove."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.ops.settle import SettleError, settle
from shared.constants import STREAM_STAKE_EXECUTED
from shared.db.models import StakeAction, Trade
from shared.ids import new_id
from tests.conftest import TEST_SIGNING_KEY
from tests.fakes.chain import ALICE
from tests.fakes.staker import COLDKEY

ROOT = Path(__file__).resolve().parents[3]


async def _action(status: str, **fields: Any) -> StakeAction:
    trade = await Trade.create(trade_id=new_id(), netuid=3, hotkey=ALICE, source="api")
    return await StakeAction.create(
        trade=trade,
        netuid=3,
        hotkey=ALICE,
        direction="add",
        status=status,
        amount_tao=Decimal(1),
        coldkey=fields.pop("coldkey", COLDKEY),
        **fields,
    )


WINDOW = {"extrinsic_hash": "0x" + "ab" * 32, "era_start_block": 10, "era_end_block": 138}


async def test_an_included_row_is_settled_with_who_and_why(orm: str) -> None:
    row = await _action("included", block=12, reason="included in block 12 …", **WINDOW)
    done = await settle(row.trade_id, "succeeded", "explorer: ExtrinsicSuccess", "alice")
    assert (done.status, done.success, done.message) == (
        "succeeded",
        True,
        "settled by operator alice",
    )
    assert done.reason == (
        "settled by operator alice: explorer: ExtrinsicSuccess "
        "(was included: included in block 12 …)"
    )
    trade = await Trade.get(trade_id=row.trade_id)
    assert (trade.status, trade.reason) == ("succeeded", done.reason)


@pytest.mark.parametrize("status", ["succeeded", "failed", "skipped", "rejected", "dry_run"])
async def test_settled_rows_are_refused(orm: str, status: str) -> None:
    row = await _action(status)
    with pytest.raises(SettleError, match=f"is {status}: only unsettled"):
        await settle(row.trade_id, "failed", "why", "alice")
    assert (await StakeAction.get(id=row.id)).status == status


async def test_an_unsettled_row_the_sweep_can_prove_needs_force(orm: str) -> None:
    row = await _action("unknown", **WINDOW)
    with pytest.raises(SettleError, match="--force"):
        await settle(row.trade_id, "failed", "why", "alice")
    assert (await StakeAction.get(id=row.id)).status == "unknown"
    done = await settle(row.trade_id, "failed", "window long past", "alice", force=True)
    assert done.status == "failed"


async def test_a_legacy_unsettled_row_needs_no_force(orm: str) -> None:
    row = await _action("submitting")  # no hash, no window: an older release's row
    done = await settle(row.trade_id, "failed", "explorer: nothing", "bob")
    assert (done.status, done.success) == ("failed", False)


async def test_bad_arguments_are_refused(orm: str) -> None:
    row = await _action("included", **WINDOW)
    with pytest.raises(SettleError, match="--status"):
        await settle(row.trade_id, "unknown", "why", "alice")
    with pytest.raises(SettleError, match="--reason"):
        await settle(row.trade_id, "failed", "  ", "alice")
    with pytest.raises(SettleError, match="no stake action"):
        await settle("nope", "failed", "why", "alice")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "EVENT_SIGNING_KEY": TEST_SIGNING_KEY, **env},
        check=False,
        cwd=ROOT,
    )


async def test_the_command_settles_and_announces(orm: str, redis: Redis, redis_url: str) -> None:
    included = await _action("included", block=12, **WINDOW)
    done = await _action("succeeded", coldkey="5SomeOtherColdkey")
    env = {"REDIS_URL": redis_url, "DATABASE_URL": orm}
    ok = _run(
        env, "settle", included.trade_id, "--status", "failed", "--reason", "explorer: failed"
    )
    assert ok.returncode == 0, ok.stderr
    assert f"trade {included.trade_id}: stake action failed: settled by operator" in ok.stdout
    refused = _run(env, "settle", done.trade_id, "--status", "failed", "--reason", "x")
    assert refused.returncode == 1 and "is succeeded: only unsettled" in refused.stderr
    row = await StakeAction.get(id=included.id)
    assert row.status == "failed" and "explorer: failed" in (row.reason or "")
    [(_, event)] = await redis.xrange(STREAM_STAKE_EXECUTED)
    assert event[b"trade_id"] == included.trade_id.encode()
    assert event[b"status"] == b"failed"
