"""How many calls ran at once: the high-water mark a concurrency test asserts on."""

from __future__ import annotations

import asyncio


class HighWater:
    """Counts the calls inside `hold` at the same time; `most` is the largest count seen."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0

    async def hold(self, seconds: float) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.inside -= 1
