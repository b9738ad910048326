"""Collapse concurrent calls for one key into one execution."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent `do(key, fn)` calls share one running `fn()`.

    The work runs in its own task, so a caller that is cancelled (client gone)
    does not cancel the work the other callers are waiting on.
    """

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def _forget(self, key: Hashable) -> Callable[[asyncio.Task[T]], None]:
        def done(_task: asyncio.Task[T]) -> None:
            self._inflight.pop(key, None)

        return done

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._inflight[key] = task
            task.add_done_callback(self._forget(key))
        return await asyncio.shield(task)
