"""The trade trigger shared by the gateway and the schedule.

Reserving the per-(netuid, hotkey) cooldown slot and appending
`dividend_requested` happen in one Lua script, so a crash can never leave a
reserved slot without its event, and 1000 concurrent requests enqueue one trade.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.constants import KEY_TRADE_COOLDOWN, KEY_TRADED_PAIRS
from shared.errors import RedisUnavailable
from shared.events import DividendRequested

# KEYS: cooldown key, stream, traded-pairs zset.
# ARGV: trade_id, cooldown ms, maxlen, pair member ('' = do not track), now (s), fields...
_RESERVE_AND_PUBLISH = """
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 6))
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
end
return {1, ARGV[1], id}
"""


@dataclass(frozen=True, slots=True)
class TriggerResult:
    enqueued: bool
    trade_id: str
    entry_id: str | None = None
    cooldown_left_s: float = 0.0


def cooldown_key(netuid: int, hotkey: str) -> str:
    return f"{KEY_TRADE_COOLDOWN}{netuid}:{hotkey}"


def pair_member(netuid: int, hotkey: str) -> str:
    return f"{netuid}:{hotkey}"


class TradeTrigger:
    def __init__(self, redis: Redis, *, cooldown_s: int, maxlen: int) -> None:
        self._redis = redis
        self.cooldown_s = cooldown_s
        self._cooldown_ms = cooldown_s * 1000
        self._maxlen = maxlen
        self._script = redis.register_script(_RESERVE_AND_PUBLISH)

    async def trigger(self, event: DividendRequested) -> TriggerResult:
        """Enqueue `event` unless a trade for its pair is inside the cooldown."""
        # Pairs traded by people are tracked for re-scoring; the schedule's own trades are not,
        # or one request would keep its pair tracked forever.
        tracked = event.source in ("api", "manual")
        args: list[str | int | float] = [
            event.trade_id,
            self._cooldown_ms,
            self._maxlen,
            pair_member(event.netuid, event.hotkey) if tracked else "",
            time.time(),
        ]
        for name, value in event.to_fields().items():
            args.extend((name, value))
        keys = [cooldown_key(event.netuid, event.hotkey), event.stream, KEY_TRADED_PAIRS]
        try:
            enqueued, trade_id, extra = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise RedisUnavailable(f"trade queue unavailable: {type(exc).__name__}") from exc
        trade_id = trade_id.decode() if isinstance(trade_id, bytes) else str(trade_id)
        if int(enqueued):
            entry = extra.decode() if isinstance(extra, bytes) else str(extra)
            return TriggerResult(True, trade_id, entry_id=entry)
        return TriggerResult(False, trade_id, cooldown_left_s=max(int(extra), 0) / 1000)
