"""Scenario 1: trades in flight through three pipeline processes; one process SIGKILLed
while it holds entries of each stage in turn (a replacement starts at once, as a
container restart policy would). Every trade must reach a final state, none lost, none
decided or executed twice; with real extrinsics the node's own list of executed
extrinsics must match the trades that decided to submit, one for one.

One coldkey submits one extrinsic at a time (nonces), so real extrinsics are serial:
about 4 a second on the simulated node here, 1000 would take ~4 minutes. The bulk run
therefore uses STAKE_DRY_RUN (a final decided state reached through the same stake
stage, coldkey lease and idempotency row), and a second run submits real extrinsics.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import pytest

from shared.events import text
from tests.resilience.results import Row, record
from tests.resilience.stack import STAGES, Fate, Proc, Stack, consumer_pid

pytestmark = pytest.mark.resilience

BULK_TRADES = int(os.environ.get("RESILIENCE_BULK_TRADES", "1000"))
REAL_TRADES = int(os.environ.get("RESILIENCE_REAL_TRADES", "100"))
API_DELAY_S = 0.2  # Datura/Chutes latency: each stage holds its entries a while


@dataclass
class Kill:
    stage: str
    consumer: str
    held: dict[str, int]  # stage -> entries the killed process held
    recovered_s: float = 0.0  # until every entry it held was reclaimed by a live process


async def held_ids(st: Stack, consumer: str) -> list[tuple[str, str, str]]:
    """(stream, group, entry id) of every entry `consumer` holds."""
    redis = st.client()
    try:
        out = []
        for _, stream, group in STAGES:
            rows = await redis.xpending_range(
                stream, group, min="-", max="+", count=10_000, consumername=consumer
            )
            out += [(stream, group, text(r["message_id"])) for r in rows]
        return out
    finally:
        await redis.aclose()


async def still_held(st: Stack, consumer: str) -> int:
    """Entries the (dead) `consumer` still holds, i.e. not yet reclaimed by another one."""
    return len(await held_ids(st, consumer))


async def kill_holder(st: Stack, stage: str, timeout: float = 60) -> tuple[Kill, list[Proc]]:
    """SIGKILL a live pipeline process as soon as it holds entries of `stage`; start a
    replacement. Returns the kill and the processes alive afterwards."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = await st.pending_by_consumer()
        live = {p.pid: p for p in st.workers if p.alive()}
        for consumer, count in sorted(pending.get(stage, {}).items(), key=lambda kv: -kv[1]):
            proc = live.get(consumer_pid(consumer) or -1)
            if count > 0 and proc is not None:
                proc.kill()
                held = {name: pending.get(name, {}).get(consumer, 0) for name, _, _ in STAGES}
                st.start_worker()
                return Kill(stage, consumer, held), list(live.values())
        await asyncio.sleep(0.02)
    raise AssertionError(f"no pipeline process held {stage} entries within {timeout:g} s")


async def run_with_kills(st: Stack, trades: int, label: str) -> tuple[Fate, list[Kill], float]:
    """Enqueue every trade, then kill a holder of each stage in turn, as fast as holders
    show up (the fakes' latency keeps tweets and sentiment entries held long enough)."""
    trade_ids = await st.enqueue(trades, label=label)
    began = time.monotonic()
    kills: list[Kill] = []
    watchers: list[asyncio.Task[None]] = []
    for stage, _, _ in STAGES:
        kill, _ = await kill_holder(st, stage)
        kills.append(kill)
        killed_at = time.monotonic()

        async def reclaimed(kill: Kill = kill, killed_at: float = killed_at) -> None:
            # Recovery: every entry the dead process held taken over by a live one.
            while await still_held(st, kill.consumer):
                assert time.monotonic() - killed_at < 90, f"{kill.consumer} never reclaimed"
                await asyncio.sleep(0.1)
            kill.recovered_s = time.monotonic() - killed_at

        watchers.append(asyncio.create_task(reclaimed()))
    await asyncio.gather(*watchers)
    fate, _ = await st.wait_final(trade_ids, timeout=400)
    fate = await st.with_chain(fate)
    return fate, kills, time.monotonic() - began


def describe(kills: list[Kill]) -> str:
    parts = []
    for kill in kills:
        held = ", ".join(f"{n} {s}" for s, n in kill.held.items() if n)
        parts.append(f"{kill.stage} ({held})")
    return "SIGKILL of a pipeline process holding " + "; ".join(parts)


@pytest.mark.timeout(480)
def test_sigkill_in_each_stage_with_1000_trades_in_flight(stack: Callable[..., Stack]) -> None:
    st = stack(pipelines=3, dry_run=True, api_delay_s=API_DELAY_S)
    fate, kills, took = asyncio.run(run_with_kills(st, BULK_TRADES, "kill-bulk"))

    assert fate.lost == [], (len(fate.lost), fate.statuses)
    assert fate.statuses == {"dry_run": BULK_TRADES}, fate.statuses
    assert fate.run_twice == 0 and fate.applied == 0
    assert fate.dead_letters == []
    assert all(k.held[k.stage] > 0 for k in kills)
    record(
        Row(
            key="1a",
            scenario="Pipeline process SIGKILLed in each stage (STAKE_DRY_RUN)",
            load=f"{BULK_TRADES} trades in flight, 3 pipeline processes",
            fault=describe(kills) + "; replaced at once",
            lost=len(fate.lost),
            twice=fate.run_twice,
            recover="held entries reclaimed by the others "
            + "/".join(f"{k.recovered_s:.1f}" for k in kills)
            + f" s after each kill; all {BULK_TRADES} final (dry_run) in {took:.0f} s",
        )
    )


@pytest.mark.timeout(300)
def test_sigkill_in_each_stage_with_real_extrinsics(stack: Callable[..., Stack]) -> None:
    st = stack(pipelines=3, dry_run=False, api_delay_s=API_DELAY_S)
    fate, kills, took = asyncio.run(run_with_kills(st, REAL_TRADES, "kill-real"))
    hashes = asyncio.run(stake_hashes(st))
    applied = asyncio.run(st.applied())

    assert fate.lost == [], (len(fate.lost), fate.statuses)
    assert fate.dead_letters == []
    assert fate.run_twice == 0
    # The node's word: one executed extrinsic per trade that decided to submit, same hashes.
    assert sorted(a["hash"] for a in applied) == sorted(h for h in hashes.values() if h)
    assert fate.applied == fate.decided_to_submit == fate.statuses["succeeded"] == REAL_TRADES
    assert all(a["success"] for a in applied)
    assert all(k.held[k.stage] > 0 for k in kills)
    record(
        Row(
            key="1b",
            scenario="Pipeline process SIGKILLed in each stage (real extrinsics)",
            load=f"{REAL_TRADES} trades, each a real add_stake_limit on the simulated node",
            fault=describe(kills) + "; replaced at once",
            lost=len(fate.lost),
            twice=fate.run_twice,
            recover="held entries reclaimed by the others "
            + "/".join(f"{k.recovered_s:.1f}" for k in kills)
            + f" s after each kill; {fate.applied} extrinsics on the node = "
            f"{fate.decided_to_submit} trades decided to submit; all final in {took:.0f} s",
        )
    )


async def stake_hashes(st: Stack) -> dict[str, str | None]:
    conn = await asyncpg.connect(st.database_url)
    try:
        rows = await conn.fetch("SELECT trade_id, extrinsic_hash FROM stake_actions")
    finally:
        await conn.close()
    return {r["trade_id"]: r["extrinsic_hash"] for r in rows}
