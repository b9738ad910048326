"""What the stream pipeline looks like right now, read from Redis: per stream its length and
last id, per consumer group its consumers, pending entries, lag and the idle time of the
oldest pending entry. Used by `python -m pipeline streams` and the gateway's
`GET /api/v1/streams` (the gateway may not import pipeline/)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.constants import (
    GROUP_SENTIMENT,
    GROUP_STAKE,
    GROUP_TWEETS,
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_TWEETS_FETCHED,
)
from shared.events import text

STREAMS = [
    (STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS),
    (STREAM_TWEETS_FETCHED, GROUP_SENTIMENT),
    (STREAM_SENTIMENT_SCORED, GROUP_STAKE),
    (STREAM_STAKE_EXECUTED, None),
    (STREAM_DEAD_LETTER, None),
]


@dataclass(frozen=True, slots=True)
class GroupRow:
    stream: str
    length: int
    last_id: str
    group: str | None
    consumers: int | None
    pending: int | None
    lag: int | None
    oldest_pending_idle_s: float | None


async def stream_rows(redis: Redis) -> list[GroupRow]:
    """One row per (stream, group); a stream without groups (or not created yet) has one
    row whose group fields are None."""
    rows: list[GroupRow] = []
    for stream, expected_group in STREAMS:
        try:
            info = await redis.xinfo_stream(stream)
        except ResponseError:  # the stream does not exist yet
            rows.append(GroupRow(stream, 0, "-", expected_group, None, None, None, None))
            continue
        length, last_id = int(info["length"]), text(info["last-generated-id"])
        groups = await redis.xinfo_groups(stream)
        if not groups:
            rows.append(GroupRow(stream, length, last_id, None, None, None, None, None))
        for group in groups:
            name = text(group["name"])
            idle = None
            if int(group["pending"]):
                oldest = await redis.xpending_range(stream, name, min="-", max="+", count=1)
                if oldest:
                    idle = int(oldest[0]["time_since_delivered"]) / 1000
            lag = group.get("lag")
            rows.append(
                GroupRow(
                    stream,
                    length,
                    last_id,
                    name,
                    int(group["consumers"]),
                    int(group["pending"]),
                    None if lag is None else int(lag),
                    idle,
                )
            )
    return rows


async def dead_letter_count(redis: Redis) -> int:
    return int(await redis.xlen(STREAM_DEAD_LETTER))
