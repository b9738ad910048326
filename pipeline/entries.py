"""What a stage handler is given and what it may answer: stream entries, the outcomes it can
raise or report per entry, and the `Stage` that binds a handler to one consumer group.

A stage handles entries one at a time (`Stage(..., handler)`: each entry is its own unit of
work) or a batch at a time (`Stage(..., batch=...)`: the entries of one read, up to the
worker's `batch`, share one database round trip per step; see pipeline/stages/kit.py). A
batch handler reports one outcome per entry in the `Outcomes` map it is given, as soon as it
knows it: what is there when the handler returns, raises or times out is what the worker
acts on.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.events import decode_fields


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry as a handler sees it, fields decoded to `str`."""

    stream: str
    group: str
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # 1 on first delivery (XPENDING times_delivered on redelivery)
    # Why the entry can never be handled (its bytes do not decode); it is dead-lettered
    # without reaching the handler.
    poison: str | None = None


class Retry(Exception):
    """Raise (or report) to ask for redelivery (entry stays pending, not acked).

    `defer_s` is a hint: when > 0 the entry becomes claimable after about
    `defer_s` (plus up to `claim_every_s`) instead of after `claim_idle_ms`;
    it cannot be deferred longer than `claim_idle_ms`. 0 means "no preference".
    """

    def __init__(self, reason: str, *, defer_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer_s = defer_s


class Unavailable(Exception):
    """Raise (or report) when a dependency (database, chain, outside API) is down. The entry
    is retried in place with backoff while this consumer keeps it, spending no delivery; the
    errors `shared.outage` recognises (connection refused, DB/Redis/chain unavailable,
    retryable outside-API errors) are treated the same without being wrapped."""


class Drop(Exception):
    """Raise (or report) to send the entry straight to the dead letters (permanent failure)."""


# entry_id -> None (done: ack it) or the exception that ended it.
Outcomes = dict[str, BaseException | None]
Handler = Callable[[StreamEntry], Awaitable[None]]
BatchHandler = Callable[[Sequence[StreamEntry], Outcomes], Awaitable[None]]


@dataclass(frozen=True, slots=True, init=False)
class Stage:
    """A handler bound to one consumer group of one stream: `handler` takes one entry at a
    time, `batch` takes every entry of a read at once (exactly one of the two)."""

    name: str
    stream: str
    group: str
    run: BatchHandler
    batched: bool

    def __init__(
        self,
        name: str,
        stream: str,
        group: str,
        handler: Handler | None = None,
        *,
        batch: BatchHandler | None = None,
    ) -> None:
        if (handler is None) == (batch is None):
            raise ValueError("a stage takes either a per-entry handler or a batch handler")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "run", batch if batch is not None else _one_at_a_time(handler))
        object.__setattr__(self, "batched", batch is not None)


def _one_at_a_time(handler: Handler | None) -> BatchHandler:
    assert handler is not None

    async def run(entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
        for entry in entries:  # the worker hands a per-entry stage one entry at a time
            await handler(entry)
            outcomes[entry.entry_id] = None

    return run


def check_worker_config(
    counts: dict[str, int], seconds: dict[str, float], shutdown_grace_s: float, stages: Any
) -> None:
    """Refuse a worker set up wrong before it starts: no stages, two on one group, counts
    below 1, durations not above 0."""
    if not stages:
        raise ValueError("a worker needs at least one stage")
    keys = [(s.stream, s.group) for s in stages]
    if len(set(keys)) != len(keys):
        raise ValueError("two stages share one stream and group")
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, limit in seconds.items():
        if limit <= 0:
            raise ValueError(f"{name} must be > 0, got {limit}")
    if shutdown_grace_s < 0:
        raise ValueError(f"shutdown_grace_s must be >= 0, got {shutdown_grace_s}")


def default_consumer() -> str:
    """A consumer name unique per process, readable in `XINFO CONSUMERS`."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def stream_entries(response: Any) -> list[Any]:
    """The (id, fields) pairs of a one-stream XREADGROUP reply, whatever its parsed shape.

    RESP2 legacy gives `[[stream, entries]]`; RESP3 and redis-py's unified
    shapes give `{stream: entries}` or `{stream: [entries]}`.
    """
    if not response:
        return []
    if isinstance(response, dict):
        value = next(iter(response.values()))
        if value and isinstance(value[0], list):
            value = value[0]
        return list(value or [])
    return list(response[0][1] or [])


def decode_entry(raw: Mapping[Any, Any]) -> tuple[dict[str, str], str | None]:
    """An entry's fields as str, or (a readable copy, why it is poison) when its bytes are not
    UTF-8: one such entry must not fail the whole read and wedge the entries beside it."""
    try:
        return decode_fields(raw), None
    except UnicodeDecodeError:
        readable: dict[str, str] = {}
        bad: list[str] = []
        for key, value in raw.items():
            name = _lenient(key)
            readable[name] = _lenient(value)
            if any(isinstance(part, bytes) and not _is_utf8(part) for part in (key, value)):
                bad.append(name)
        return readable, f"Drop: fields are not valid UTF-8: {', '.join(bad) or 'unknown'}"


def _lenient(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True
