"""`python -m pipeline streams`: length, last id, groups, consumers, pending, lag, oldest
pending idle time per stream, and the dead-letter count."""

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


def render(rows: list[GroupRow], dead_letters: int) -> str:
    header = (
        "stream",
        "length",
        "last id",
        "group",
        "consumers",
        "pending",
        "lag",
        "oldest pending",
    )
    table = [header]
    for r in rows:
        table.append(
            (
                r.stream,
                str(r.length),
                r.last_id,
                r.group or "-",
                "-" if r.consumers is None else str(r.consumers),
                "-" if r.pending is None else str(r.pending),
                "-" if r.lag is None else str(r.lag),
                "-" if r.oldest_pending_idle_s is None else f"{r.oldest_pending_idle_s:.1f}s",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"\ndead letters: {dead_letters}")
    return "\n".join(lines)


async def report(redis: Redis) -> str:
    rows = await stream_rows(redis)
    return render(rows, int(await redis.xlen(STREAM_DEAD_LETTER)))
