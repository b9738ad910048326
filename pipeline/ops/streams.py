"""`python -m pipeline streams`: length, last id, groups, consumers, pending, lag, oldest
pending idle time per stream, and the dead-letter count."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis

from shared.streams import GroupRow, dead_letter_count, stream_rows

__all__ = ["JSON_KEYS", "GroupRow", "render", "report", "report_json", "stream_rows"]


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
    return render(rows, await dead_letter_count(redis))


# `streams --json`: {"streams": [one object per row, these keys], "dead_letters": int}
JSON_KEYS = {
    "stream": "stream name",
    "length": "entries in the stream",
    "last_id": 'last generated entry id ("-" if the stream does not exist)',
    "group": "consumer group, or null (no group reads it)",
    "consumers": "consumers in the group, or null",
    "pending": "entries delivered and not yet acked, or null",
    "lag": "entries not yet delivered to the group, or null (unknown)",
    "oldest_pending_idle_s": "seconds since the oldest pending entry was delivered, or null",
}


async def report_json(redis: Redis) -> dict[str, Any]:
    rows = await stream_rows(redis)
    return {
        "streams": [asdict(row) for row in rows],
        "dead_letters": await dead_letter_count(redis),
    }
