"""The worker's concurrency slots: one per entry being handled, taken before a read so a
consumer never reads more entries than it can start, and given back when the entry is done."""

from __future__ import annotations

import asyncio


class Slots:
    """A semaphore of `size` slots that stops handing them out once `stop` is set."""

    def __init__(self, size: int, stop: asyncio.Event) -> None:
        self._sem = asyncio.Semaphore(size)
        self._stop = stop

    async def reserve(self, want: int) -> int:
        """Take between 1 and `want` slots, waiting for the first; 0 once stopping."""
        if not await self._acquire_one():
            return 0
        got = 1
        while got < want and not self._sem.locked():
            await self._sem.acquire()  # returns at once: the semaphore is not locked
            got += 1
        return got

    def release(self, count: int) -> None:
        for _ in range(count):
            self._sem.release()

    async def _acquire_one(self) -> bool:
        if self._stop.is_set():
            return False
        if not self._sem.locked():
            await self._sem.acquire()
            return True
        acquire = asyncio.ensure_future(self._sem.acquire())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([acquire, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not acquire.done():
                acquire.cancel()
                await asyncio.wait([acquire])
        got = not acquire.cancelled() and acquire.exception() is None
        if got and self._stop.is_set():
            self._sem.release()
            return False
        return got
