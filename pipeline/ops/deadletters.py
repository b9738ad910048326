"""`python -m pipeline dead-letter list | show ID | requeue ID | purge --older-than 7d`."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.constants import EVENT_STREAMS, STREAM_DEAD_LETTER
from shared.events import DeadLetter, decode_fields, text
from shared.ids import iso
from shared.logging import mask, printable
from shared.signing import SignatureError, is_signed, verify

# Where a dead letter may go back to: an event stream, never the dead-letter stream itself.
REQUEUE_TARGETS = frozenset(EVENT_STREAMS.values()) - {STREAM_DEAD_LETTER}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")  # a whole stream id: `ms-seq`, as `list` shows
# Put a letter's entry back and delete the letter as one step, only while the letter is still
# there: a second requeue of the same letter (another operator, a retry) finds it gone and
# publishes nothing. An XADD that fails (e.g. the stream key holds another type) stops the
# script before the letter is deleted. KEYS: dead-letter stream, target stream; ARGV: letter
# id, MAXLEN, then the entry's field/value pairs.
_REQUEUE_SCRIPT = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local new_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
"""
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadLetterError(Exception):
    pass


def parse_duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise DeadLetterError(f"bad duration {text!r}: use e.g. 90s, 30m, 12h, 7d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True, slots=True)
class Letter:
    """One entry of stream:dead_letter. `event` is the letter when the entry is a `DeadLetter`
    signed with EVENT_SIGNING_KEY; otherwise (an old, malformed or foreign entry: anyone who
    can write to Redis can add one) it is None, `invalid` says why, and only the raw
    `fields` are there to show: such a letter is never requeued."""

    id: str
    fields: dict[str, str]  # as stored (bytes that are not UTF-8 replaced)
    event: DeadLetter | None
    invalid: str | None


def _lossy(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def read_letter(entry_id: str, raw: Mapping[Any, Any]) -> Letter:
    """The letter in one entry's fields: typed when it is a signed DeadLetter."""
    try:
        fields = decode_fields(raw)
    except UnicodeDecodeError:
        return Letter(entry_id, {_lossy(k): _lossy(v) for k, v in raw.items()}, None, "not UTF-8")
    try:
        verify(fields)
    except SignatureError as exc:  # "unsigned event" | "bad signature"
        return Letter(entry_id, fields, None, str(exc))
    if fields.get("type") != DeadLetter.TYPE:  # e.g. a signed event copied here
        return Letter(entry_id, fields, None, "not a dead_letter entry")
    try:
        event = DeadLetter.from_fields(fields)
    except ValidationError as exc:
        names = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        return Letter(entry_id, fields, None, f"malformed: {', '.join(names) or 'fields'}")
    except ValueError:
        return Letter(entry_id, fields, None, "malformed")
    return Letter(entry_id, fields, event, None)


async def list_letters(redis: Redis, count: int = 50) -> list[Letter]:
    entries = await redis.xrevrange(STREAM_DEAD_LETTER, count=count) or []
    return [read_letter(text(eid), f) for eid, f in entries if f is not None]


def _letter_id(entry_id: str) -> str:
    """`entry_id` if it is a whole stream id; a bare millisecond would match every letter
    written in that millisecond."""
    if not _ENTRY_ID.match(entry_id):
        raise DeadLetterError(
            f"not a dead letter id: {printable(entry_id, limit=40)!r} "
            "(use the whole id `dead-letter list` shows, like 1700000000000-0)"
        )
    return entry_id


async def get_letter(redis: Redis, entry_id: str) -> Letter:
    entry_id = _letter_id(entry_id)
    entries = await redis.xrange(STREAM_DEAD_LETTER, min=entry_id, max=entry_id) or []
    if not entries or entries[0][1] is None or text(entries[0][0]) != entry_id:
        raise DeadLetterError(f"no dead letter {entry_id}")
    return read_letter(entry_id, entries[0][1])


def _original(event: DeadLetter) -> dict[str, str] | None:
    """The failed entry's fields, when `original` holds them: a JSON object of strings."""
    try:
        data = orjson.loads(event.original)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not data:
        return None
    if not all(isinstance(value, str) for value in data.values()):
        return None
    return data


async def requeue(redis: Redis, entry_id: str, *, maxlen: int) -> str:
    """Put the original entry back on its stream, untouched (same trade_id, so the stages'
    idempotency holds, and same signature), and remove the dead letter, atomically: a letter
    requeued or purged meanwhile is not put back twice.

    Only a letter signed with the key (one the worker wrote) whose entry is signed too."""
    letter = await get_letter(redis, entry_id)
    shown_id = letter.id
    if letter.event is None:
        raise DeadLetterError(
            f"dead letter {shown_id} is not a valid dead letter ({letter.invalid}): only a "
            "DeadLetter signed with EVENT_SIGNING_KEY is requeued"
        )
    original = _original(letter.event)
    if original is None:
        raise DeadLetterError(f"dead letter {shown_id} has no original entry to requeue")
    stream = letter.event.from_stream
    if stream not in REQUEUE_TARGETS:
        # An old letter, or one written by a holder of the key, may name any key: never
        # write to one unless it is an event stream.
        raise DeadLetterError(
            f"dead letter {shown_id} names stream {printable(stream, limit=80)!r}, "
            f"not an event stream ({', '.join(sorted(REQUEUE_TARGETS))}): not requeued"
        )
    kind = original.get("type", "")
    if EVENT_STREAMS.get(kind) != stream:
        # The entry's (signed) type says where it belongs; a letter cannot move it elsewhere.
        raise DeadLetterError(
            f"dead letter {shown_id}: its entry is of type {printable(kind, limit=40)!r}, "
            f"which does not belong on {stream}: not requeued"
        )
    if not is_signed(original):
        # Requeued untouched, it keeps its signature; one that has none would only come back.
        raise DeadLetterError(
            f"dead letter {shown_id} is unsigned or badly signed (not written by a holder of "
            "EVENT_SIGNING_KEY): not requeued"
        )
    pairs = [part for item in original.items() for part in item]
    try:
        new_id = await redis.eval(
            _REQUEUE_SCRIPT, 2, STREAM_DEAD_LETTER, stream, letter.id, maxlen, *pairs
        )
    except ResponseError as exc:  # nothing was written, the letter stays
        raise DeadLetterError(
            f"dead letter {shown_id} not requeued: {printable(str(exc), limit=200)}"
        ) from exc
    if new_id is None:
        raise DeadLetterError(f"dead letter {shown_id} is gone (requeued or purged meanwhile)")
    return text(new_id)


async def count(redis: Redis) -> int:
    return int(await redis.xlen(STREAM_DEAD_LETTER))


async def purge(redis: Redis, older_than_s: int) -> int:
    cutoff_ms = max(0, int((time.time() - older_than_s) * 1000))
    return int(await redis.xtrim(STREAM_DEAD_LETTER, minid=f"{cutoff_ms}-0", approximate=False))


def _view(letter: Letter) -> dict[str, Any]:
    """What list/show print: the typed letter's fields (by their stream names), or the raw
    fields of an invalid one."""
    if letter.event is None:
        return dict(letter.fields)
    view = letter.event.model_dump(by_alias=True)
    view["occurred_at"] = iso(letter.event.occurred_at)
    return view


def _shown(value: Any, limit: int | None = None) -> str:
    """A value for the terminal: secrets masked, control characters escaped."""
    return printable(mask(str(value)), limit=limit)


def describe(letter: Letter) -> str:
    """One line of `dead-letter list`; an invalid letter is marked, from its raw fields."""
    view = _view(letter)
    mark = "" if letter.event is not None else f"[invalid: {_shown(letter.invalid)}]  "
    return (
        f"{_shown(letter.id)}  {_shown(view.get('stream') or '?', 80)}  "
        f"trade={_shown(view.get('trade_id') or '-', 80)}  "
        f"deliveries={_shown(view.get('deliveries', '?'), 20)}  "
        f"{mark}{_shown(view.get('error') or '', 100)}"
    )


def show_lines(letter: Letter) -> list[str]:
    """`dead-letter show`: every stored field (all covered by the letter's signature when it
    is valid), masked and escaped; an invalid letter says so first."""
    lines = [f"{_shown(k)}: {_shown(v)}" for k, v in letter.fields.items()]
    if letter.event is None:
        lines.insert(0, f"invalid: {_shown(letter.invalid)} (raw fields below; never requeued)")
    return lines


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
    "invalid": "null, or why it is no signed DeadLetter (then raw fields; never requeued)",
    "original": "the failed entry's fields (object), or null; `show` only",
}


def _int_or_none(value: int | str | None, *, most: int) -> int | None:
    """`value` as an int in 0..`most`, else None (a raw letter may hold any digits)."""
    try:
        number = None if value is None else int(value)
    except ValueError:
        return None
    return number if number is not None and 0 <= number <= most else None


def letter_json(letter: Letter, *, original: bool) -> dict[str, Any]:
    """A dead letter in the stable --json shape (JSON_KEYS); `original` only with original."""
    view = _view(letter)
    out: dict[str, Any] = {
        "id": letter.id,
        "stream": view.get("stream"),
        "group": view.get("group"),
        "entry_id": view.get("entry_id"),
        "trade_id": view.get("trade_id"),
        "netuid": _int_or_none(view.get("netuid"), most=65535),
        "hotkey": view.get("hotkey"),
        "source": view.get("source"),
        "deliveries": _int_or_none(view.get("deliveries"), most=2**63 - 1),
        "error": view.get("error") or "",
        "occurred_at": view.get("occurred_at"),
        "invalid": letter.invalid,
    }
    if original:
        try:
            fields = orjson.loads(view.get("original") or "")
        except orjson.JSONDecodeError:
            fields = None
        out["original"] = fields if isinstance(fields, dict) else None
    return {key: _masked(value) for key, value in out.items()}


def _masked(value: Any) -> Any:
    """`value` with every secret in its strings masked (a raw letter may hold anything)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value
