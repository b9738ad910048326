"""Scenario 6: a SIGTERM'd `python -m pipeline run` exits within its drain deadline, under
load and while the chain stalls (its stake handlers stuck in chain calls), and the
trades it held are finished by the others.

The deadline is the sum of the bounds in pipeline/worker.py: intake stop (BLOCK 1 s + 2 s),
drain of handlers and job runs (Worker shutdown_grace_s, 30 s), cancel of what is left
(5 s), plus 2 s to close connections.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from tests.resilience.results import Row, record
from tests.resilience.stack import Proc, Stack, consumer_pid, dev_rpc, wait_finished

pytestmark = pytest.mark.resilience

DRAIN_DEADLINE_S = 3 + 30 + 5 + 2
TRADES = 400


async def busiest(st: Stack) -> tuple[Proc, int]:
    """The live pipeline process holding the most entries, and how many it holds."""
    held: dict[int, int] = {}
    for per_consumer in (await st.pending_by_consumer()).values():
        for consumer, count in per_consumer.items():
            pid = consumer_pid(consumer)
            if pid is not None:
                held[pid] = held.get(pid, 0) + count
    live = [p for p in st.workers if p.alive()]
    proc = max(live, key=lambda p: held.get(p.pid, 0))
    return proc, held.get(proc.pid, 0)


async def sigterm(proc: Proc) -> tuple[float, int | None]:
    """Seconds from SIGTERM to exit, and the exit code (the process is SIGKILLed, and the
    test fails, only past twice the deadline)."""
    began = time.monotonic()
    proc.signal(signal.SIGTERM)
    while proc.alive() and time.monotonic() - began < 2 * DRAIN_DEADLINE_S:
        await asyncio.sleep(0.02)
    took = time.monotonic() - began
    if proc.alive():
        proc.kill()
    return took, proc.popen.returncode


@pytest.mark.timeout(300)
def test_sigterm_exits_within_the_drain_deadline(stack: Callable[..., Stack]) -> None:
    asyncio.run(scenario(stack(pipelines=3, dry_run=True)))


async def scenario(st: Stack) -> None:
    trade_ids = await st.enqueue(TRADES, label="term")
    await wait_finished(st.database_url, 30, timeout=60)
    first, first_held = await busiest(st)
    loaded_s, loaded_rc = await sigterm(first)
    # The first drain may outlast the load: give the second SIGTERM work of its own.
    trade_ids += await st.enqueue(TRADES // 4, label="term-stalled")
    await dev_rpc(st.node_url, "dev_fault", "stall")
    try:
        second, second_held = await busiest(st)
        deadline = time.monotonic() + 15
        while second_held == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # until stake handlers wait on the node with entries held
            second, second_held = await busiest(st)
        stalled_s, stalled_rc = await sigterm(second)
    finally:
        await dev_rpc(st.node_url, "dev_fault", "unstall")
    st.start_worker()
    st.start_worker()
    fate, took = await st.wait_final(trade_ids, timeout=180)

    assert loaded_rc == 0 and loaded_s < DRAIN_DEADLINE_S, (loaded_rc, loaded_s)
    assert stalled_rc == 0 and stalled_s < DRAIN_DEADLINE_S, (stalled_rc, stalled_s)
    assert first_held > 0 and second_held > 0
    assert fate.lost == [] and fate.statuses == {"dry_run": len(trade_ids)}, fate.statuses
    assert fate.run_twice == 0 and fate.dead_letters == []
    record(
        Row(
            key="6",
            scenario="SIGTERM of a pipeline process (bounded shutdown)",
            load=f"{len(trade_ids)} trades (STAKE_DRY_RUN), 3 pipeline processes",
            fault=f"SIGTERM to the busiest process under load ({first_held} entries held), "
            f"then to another while the node stalls ({second_held} held)",
            lost=len(fate.lost),
            twice=fate.run_twice,
            recover=f"exited (code 0) in {loaded_s:.1f} s and {stalled_s:.1f} s "
            f"(deadline {DRAIN_DEADLINE_S} s); all trades final in {took:.0f} s",
        )
    )
