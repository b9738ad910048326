"""How long to wait before trying again: one capped exponential backoff for every retry loop.

The outside-API client (pipeline.clients.http), the worker's Redis loops and its in-place
outage retries (pipeline.worker) and the chain's reconnect loop (shared.chain.subtensor) all
wait by this one rule, each with its own bounds. Only the schedule lives here: each loop keeps
its own sleep (injected in tests, cut short by the worker's stop) and its own idea of what is
worth retrying.

The wait before retry n (0-based) is `min(cap_s, first_s * 2**n)`, multiplied by a random
factor in `[1 - jitter, 1]` so that many clients hit by one outage do not retry in step. A
server's `Retry-After` wins when it is longer, capped at `retry_after_max_s` so that one
header cannot park a worker for an hour.

Why not stamina or tenacity: both wrap "call this function until it succeeds", while two of
the three loops here run until stopped and reset after each success, and neither offers the
HTTP client's jitter (a factor in [0.5, 1]; stamina adds `uniform(0, wait_jitter)`,
tenacity's full jitter draws from `[0, wait]`). The arithmetic is a few lines; a dependency
would not remove the loops.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2.0 ** 1024 overflows; any cap is reached long before this many doublings.
_MAX_DOUBLINGS = 1000


@dataclass(frozen=True, slots=True)
class Backoff:
    """A backoff policy: `delay(n)` is the wait before retry n (0-based)."""

    first_s: float
    cap_s: float
    jitter: float = 0.0  # 0.5: the wait is scaled by a random factor in [0.5, 1]
    retry_after_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.cap_s <= 0:
            raise ValueError(f"backoff waits must be > 0, got {self.first_s} and {self.cap_s}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")
        if self.retry_after_max_s < 0:
            raise ValueError(f"retry_after_max_s must be >= 0, got {self.retry_after_max_s}")

    def delay(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry `retry`; a longer `retry_after_s` (the server's
        Retry-After, in seconds) wins, up to `retry_after_max_s`."""
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        wait = min(self.cap_s, self.first_s * 2.0 ** min(retry, _MAX_DOUBLINGS))
        if self.jitter:
            wait *= random.uniform(1.0 - self.jitter, 1.0)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.retry_after_max_s))
        return wait

    def waits(self) -> Waits:
        """The waits of one retry loop under this policy."""
        return Waits(self)


class Waits:
    """The successive waits of one loop: `next()` before each retry, `reset()` after a success
    (so the next failure waits `first_s` again)."""

    __slots__ = ("policy", "retries")

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.retries = 0

    def next(self, retry_after_s: float | None = None) -> float:
        wait = self.policy.delay(self.retries, retry_after_s)
        if self.retries < _MAX_DOUBLINGS:
            self.retries += 1
        return wait

    def reset(self) -> None:
        self.retries = 0
