"""Bounded stops: a task that swallows cancels (as one inside redis-py's wait_for can on
Python 3.11) must not hang whoever stops it."""

from __future__ import annotations

import asyncio
import time

from shared.tasks import cancel_and_wait, stop_task


async def _swallows_cancels(times: int, ended: list[str]) -> None:
    """Ignores the first `times` cancels, like a task whose cancel was lost."""
    lost = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lost += 1
            if lost > times:
                ended.append("cancelled")
                raise


async def _never_stops() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


async def test_repeated_cancel_ends_a_task_that_lost_the_first_ones() -> None:
    ended: list[str] = []
    task = asyncio.create_task(_swallows_cancels(3, ended))
    await asyncio.sleep(0)
    left = await cancel_and_wait([task], timeout_s=5)
    assert left == []
    assert ended == ["cancelled"]
    assert task.cancelled()


async def test_a_task_that_never_stops_is_abandoned_within_the_bound() -> None:
    task = asyncio.create_task(_never_stops())
    await asyncio.sleep(0)
    started = time.monotonic()
    left = await cancel_and_wait([task], timeout_s=0.3)
    assert time.monotonic() - started < 1.0
    assert left == [task]
    # Clean up: let the loop forget it (the test loop closes with it pending otherwise).
    task.get_coro().close()  # type: ignore[union-attr]


async def test_stop_task_prefers_the_stop_event_and_reports_the_end() -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def loop() -> None:
        await stop.wait()
        seen.append("stopped cleanly")

    task = asyncio.create_task(loop())
    assert await stop_task(task, stop, grace_s=1)
    assert seen == ["stopped cleanly"]
    assert not task.cancelled()


async def test_stop_task_cancels_after_the_grace_time() -> None:
    ended: list[str] = []
    task = asyncio.create_task(_swallows_cancels(1, ended))
    started = time.monotonic()
    assert await stop_task(task, asyncio.Event(), grace_s=0.1, cancel_s=2)
    assert ended == ["cancelled"]
    assert time.monotonic() - started < 1.5


async def test_a_cancel_of_the_caller_is_not_swallowed() -> None:
    inner = asyncio.create_task(_never_stops())

    async def stopper() -> None:
        await cancel_and_wait([inner], timeout_s=30)

    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0.05)
    outer.cancel()
    done, _ = await asyncio.wait({outer}, timeout=2)
    assert outer in done and outer.cancelled()
    inner.get_coro().close()  # type: ignore[union-attr]
