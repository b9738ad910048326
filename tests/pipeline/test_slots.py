"""The worker's concurrency slots: take what is free (waiting for the first), stop cleanly."""

from __future__ import annotations

import asyncio

from pipeline.slots import Slots


async def _still_waiting(task: asyncio.Task[int]) -> bool:
    await asyncio.sleep(0.05)
    return not task.done()


class TestReserve:
    async def test_takes_up_to_want_when_free(self) -> None:
        slots = Slots(5, asyncio.Event())
        assert await slots.reserve(2) == 2
        assert await slots.reserve(1) == 1
        assert await slots.reserve(10) == 2  # only two were left: no wait for more

    async def test_waits_while_none_is_free_then_takes_a_released_one(self) -> None:
        slots = Slots(2, asyncio.Event())
        assert await slots.reserve(2) == 2
        waiting = asyncio.create_task(slots.reserve(3))
        assert await _still_waiting(waiting)
        slots.release(1)
        assert await asyncio.wait_for(waiting, 1) == 1

    async def test_release_gives_slots_back(self) -> None:
        slots = Slots(3, asyncio.Event())
        assert await slots.reserve(3) == 3
        slots.release(3)
        assert await slots.reserve(5) == 3

    async def test_returns_zero_once_stop_is_set_while_waiting(self) -> None:
        stop = asyncio.Event()
        slots = Slots(1, stop)
        assert await slots.reserve(1) == 1
        waiting = asyncio.create_task(slots.reserve(1))
        assert await _still_waiting(waiting)
        stop.set()
        assert await asyncio.wait_for(waiting, 1) == 0

    async def test_returns_zero_at_once_after_stop_even_with_free_slots(self) -> None:
        stop = asyncio.Event()
        slots = Slots(4, stop)
        stop.set()
        assert await slots.reserve(2) == 0

    async def test_a_slot_released_as_stop_is_set_is_not_handed_out(self) -> None:
        """Both wake-ups at once: the waiter must not go on reading while stopping."""
        stop = asyncio.Event()
        slots = Slots(1, stop)
        assert await slots.reserve(1) == 1
        waiting = asyncio.create_task(slots.reserve(1))
        assert await _still_waiting(waiting)
        slots.release(1)
        stop.set()
        assert await asyncio.wait_for(waiting, 1) == 0
