"""Stopping background tasks within a bound.

On Python 3.11 a cancel that lands while a task sits inside `asyncio.wait_for` (redis-py
wraps its reads in one) can be swallowed: the task carries on as if nothing happened. A
single `task.cancel()` followed by an unbounded `await task` then waits for ever. Here the
cancel is repeated until the task ends or the deadline passes, and the caller learns which
tasks would not stop instead of hanging with them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from loguru import logger

_RECANCEL_EVERY_S = 0.1


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], *, timeout_s: float
) -> list[asyncio.Future[Any]]:
    """Cancel `tasks` (again and again) until they end or `timeout_s` passes.

    Returns the tasks still running at the deadline (logged). A cancel of the *calling*
    task is never swallowed: it propagates as usual.
    """
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_EVERY_S, remaining))
    for task in pending:
        logger.error(
            "background task did not stop within its bound; abandoned",
            task=task.get_name() if isinstance(task, asyncio.Task) else repr(task),
            timeout_s=timeout_s,
        )
    return list(pending)


async def stop_task(
    task: asyncio.Task[Any], stop: asyncio.Event, *, grace_s: float, cancel_s: float = 5.0
) -> bool:
    """Ask `task` to stop through `stop`, wait `grace_s` for it, then cancel it within
    `cancel_s`. True when it ended."""
    stop.set()
    if not task.done():
        await asyncio.wait({task}, timeout=grace_s)
    if not task.done():
        await cancel_and_wait([task], timeout_s=cancel_s)
    if task.done() and not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("background task failed", task=task.get_name())
    return task.done()
