"""Keeping pending entries owned: a handler may run longer than `claim_idle_ms`, so the
worker keeps resetting the idle time of the entries it is still handling (`XCLAIM ... JUSTID`,
which leaves the delivery count alone); a retried entry is made claimable early by back-dating
its idle time instead.

The ownership check (XPENDING filtered by consumer) and the XCLAIM are one atomic step
(a Lua script), so an entry that another consumer has already reclaimed is never taken back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

_MIN_KEEPALIVE_S: Final = 0.01

# ARGV: group, consumer, idle ms to set, ids...
_TOUCH_LUA: Final = """
local touched = 0
for i = 4, #ARGV do
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #owned > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    touched = touched + 1
  end
end
return touched
"""

Key = tuple[str, str, str]  # (stream, group, entry id)


@dataclass(slots=True)
class _Held:
    stream: str
    group: str
    entry_id: str
    last_touch: float  # monotonic; when its idle time was last reset in Redis


class Ownership:
    """The entries this consumer is handling, kept from being reclaimed while they run."""

    def __init__(self, redis: Redis, consumer: str, *, claim_idle_ms: int) -> None:
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._touch = redis.register_script(_TOUCH_LUA)
        self._held: dict[Key, _Held] = {}
        self.period_s = max(_MIN_KEEPALIVE_S, claim_idle_ms / 3000)

    def hold(self, keys: Iterable[Key]) -> None:
        now = time.monotonic()
        for stream, group, entry_id in keys:
            self._held[(stream, group, entry_id)] = _Held(stream, group, entry_id, now)

    def let_go(self, keys: Iterable[Key]) -> None:
        """No more touches for these: one racing a retry's defer would undo it."""
        for key in keys:
            self._held.pop(key, None)

    async def keepalive_loop(self) -> None:
        """Reset the idle time of held entries every third of `claim_idle_ms`."""
        while True:
            await asyncio.sleep(self.period_s)
            now = time.monotonic()
            due: dict[tuple[str, str], list[_Held]] = {}
            for item in list(self._held.values()):
                if now - item.last_touch >= self.period_s:
                    due.setdefault((item.stream, item.group), []).append(item)
            for (stream, group), items in due.items():
                try:
                    await self._touch(
                        keys=[stream], args=[group, self._consumer, 0, *(i.entry_id for i in items)]
                    )
                except (RedisError, OSError) as exc:
                    logger.warning("keepalive failed", stream=stream, error=str(exc))
                    continue
                for item in items:
                    item.last_touch = now

    async def defer(self, stream: str, group: str, entry_ids: list[str], defer_s: float) -> None:
        """Make retried entries claimable after ~defer_s by back-dating their idle time, only
        while this consumer still owns them."""
        idle_ms = max(0, self._claim_idle_ms - int(defer_s * 1000))
        try:
            await self._touch(keys=[stream], args=[group, self._consumer, idle_ms, *entry_ids])
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not apply retry defer; default reclaim delay applies", error=str(exc)
            )
