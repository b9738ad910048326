"""When to try an outside API again: the retry policy and the server's `Retry-After`.

The waits follow the project's one backoff (`shared.backoff.Backoff`); a `Retry-After`
header from the server wins when longer, within a cap.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from shared.backoff import Backoff

# Each wait is scaled by a random factor in [1 - HTTP_JITTER, 1].
HTTP_JITTER: Final = 0.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how long to wait between tries.

    `max_retries` counts retries after the first try. The waits follow the shared
    backoff (`shared.backoff.Backoff`): `min(backoff_max_s, backoff_base_s * 2**n)`
    before retry n (0-based), scaled by a random factor in [0.5, 1] so that many
    workers hit by one outage do not retry in step; a `Retry-After` from the server
    wins when longer, capped at `retry_after_max_s` so one header cannot park a
    worker for an hour.
    """

    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    _schedule: Backoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schedule = Backoff(
            first_s=self.backoff_base_s,
            cap_s=self.backoff_max_s,
            jitter=HTTP_JITTER,
            retry_after_max_s=self.retry_after_max_s,
        )
        object.__setattr__(self, "_schedule", schedule)

    def backoff(self, retry_index: int, retry_after_s: float | None = None) -> float:
        return self._schedule.delay(retry_index, retry_after_s)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
