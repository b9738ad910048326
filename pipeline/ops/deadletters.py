"""`python -m pipeline dead-letter list | show ID | requeue ID | purge --older-than 7d`."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.constants import EVENT_STREAMS, STREAM_DEAD_LETTER
from shared.events import decode_fields, text
from shared.logging import printable
from shared.signing import is_signed

# Where a dead letter may go back to: an event stream, never the dead-letter stream itself.
REQUEUE_TARGETS = frozenset(EVENT_STREAMS.values()) - {STREAM_DEAD_LETTER}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadLetterError(Exception):
    pass


def parse_duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise DeadLetterError(f"bad duration {text!r}: use e.g. 90s, 30m, 12h, 7d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


async def list_letters(redis: Redis, count: int = 50) -> list[tuple[str, dict[str, str]]]:
    entries = await redis.xrevrange(STREAM_DEAD_LETTER, count=count) or []
    return [(text(eid), decode_fields(f)) for eid, f in entries if f is not None]


async def get_letter(redis: Redis, entry_id: str) -> dict[str, str]:
    entries = await redis.xrange(STREAM_DEAD_LETTER, min=entry_id, max=entry_id) or []
    if not entries or entries[0][1] is None:
        raise DeadLetterError(f"no dead letter {entry_id}")
    return decode_fields(entries[0][1])


async def requeue(redis: Redis, entry_id: str, *, maxlen: int) -> str:
    """Put the original entry back on its stream, untouched (same trade_id, so the stages'
    idempotency holds, and same signature), and remove the dead letter, atomically."""
    letter = await get_letter(redis, entry_id)
    original = orjson.loads(letter["original"])
    if not isinstance(original, dict) or not letter.get("stream"):
        raise DeadLetterError(f"dead letter {entry_id} has no original entry to requeue")
    stream = letter["stream"]
    if stream not in REQUEUE_TARGETS:
        # A letter is signed, yet an old one (or one written by a holder of the key) may name
        # any key: never write to one unless it is an event stream.
        raise DeadLetterError(
            f"dead letter {entry_id} names stream {printable(stream, limit=80)!r}, "
            f"not an event stream ({', '.join(sorted(REQUEUE_TARGETS))}): not requeued"
        )
    kind = str(original.get("type", ""))
    if EVENT_STREAMS.get(kind) != stream:
        # The entry's (signed) type says where it belongs; a letter cannot move it elsewhere.
        raise DeadLetterError(
            f"dead letter {entry_id}: its entry is of type {printable(kind, limit=40)!r}, "
            f"which does not belong on {stream}: not requeued"
        )
    if not is_signed({str(k): str(v) for k, v in original.items()}):
        # Requeued untouched, it keeps its signature; one that has none would only come back.
        raise DeadLetterError(
            f"dead letter {entry_id} is unsigned or badly signed (not written by a holder of "
            "EVENT_SIGNING_KEY): not requeued"
        )
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(letter["stream"], original, maxlen=maxlen, approximate=True)
    pipe.xdel(STREAM_DEAD_LETTER, entry_id)
    new_id, _ = await pipe.execute()
    return new_id.decode() if isinstance(new_id, bytes) else str(new_id)


async def count(redis: Redis) -> int:
    return int(await redis.xlen(STREAM_DEAD_LETTER))


async def purge(redis: Redis, older_than_s: int) -> int:
    cutoff_ms = int((time.time() - older_than_s) * 1000)
    return int(await redis.xtrim(STREAM_DEAD_LETTER, minid=f"{cutoff_ms}-0", approximate=False))


def describe(entry_id: str, letter: dict[str, str]) -> str:
    error = letter.get("error", "")
    return (
        f"{entry_id}  {letter.get('stream', '?')}  trade={letter.get('trade_id', '-')}  "
        f"deliveries={letter.get('deliveries', '?')}  {error[:100]}"
    )


# `dead-letter list --json` / `show --json`: one object per dead letter, these keys.
JSON_KEYS = {
    "id": "the dead letter's own entry id (what show/requeue take)",
    "stream": "the stream the failed entry came from",
    "group": "the consumer group that failed it",
    "entry_id": "the failed entry's id on that stream",
    "trade_id": "its trade, or null",
    "netuid": "its subnet (int), or null",
    "hotkey": "its hotkey, or null",
    "source": "api | schedule | manual | replay, or null",
    "deliveries": "times it was delivered (int), or null",
    "error": "the last error (secrets masked)",
    "occurred_at": "when it was dead-lettered (ISO 8601), or null",
    "original": "the failed entry's fields (object), or null; `show` only",
}


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def letter_json(entry_id: str, letter: dict[str, str], *, original: bool) -> dict[str, Any]:
    """A dead letter in the stable --json shape (JSON_KEYS); `original` only with original."""
    out: dict[str, Any] = {
        "id": entry_id,
        "stream": letter.get("stream"),
        "group": letter.get("group"),
        "entry_id": letter.get("entry_id"),
        "trade_id": letter.get("trade_id"),
        "netuid": _int_or_none(letter.get("netuid")),
        "hotkey": letter.get("hotkey"),
        "source": letter.get("source"),
        "deliveries": _int_or_none(letter.get("deliveries")),
        "error": letter.get("error", ""),
        "occurred_at": letter.get("occurred_at"),
    }
    if original:
        try:
            fields = orjson.loads(letter.get("original", ""))
        except orjson.JSONDecodeError:
            fields = None
        out["original"] = fields if isinstance(fields, dict) else None
    return out
