"""Event schemas for the Redis streams.

Entries are flat and human-readable so `redis-cli XRANGE` shows them as they
are: scalars as strings, nested data as one JSON field. Every entry carries `sig`,
the HMAC of its other fields (shared/signing.py), added here so no publisher can
leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.constants import EVENT_STREAMS, EVENT_VERSION
from shared.ids import iso, new_id, utcnow
from shared.signing import sign
from shared.ss58 import is_valid_ss58
from shared.tweets import Tweet

Source = Literal["api", "schedule", "manual", "replay"]


class StreamEvent(BaseModel):
    """What every entry of every stream carries: its type, id, version and time, signed."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    TYPE: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_id)
    version: int = EVENT_VERSION
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def stream(self) -> str:
        """The stream this type of event is published to."""
        return EVENT_STREAMS[self.TYPE]

    def to_fields(self) -> dict[str, str]:
        """The stream entry, signed with the process's EVENT_SIGNING_KEY."""
        fields: dict[str, str] = {"type": self.TYPE}
        for name, value in self.model_dump(mode="python", by_alias=True).items():
            if value is None:
                continue
            fields[name] = _encode(value)
        return sign(fields)

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Self:
        """The event in `raw` (the signature is checked by the stages, see `parse_event`).

        Stricter than construction on purpose: an entry comes from outside the process, so
        it must be of this type (ValueError otherwise). Fields the type does not have are
        ignored: entries written before a field was dropped (`dividend`, `unit`, `block` of
        old `dividend_requested` entries) still parse, and their signature, taken over the
        raw entry, still verifies.
        """
        fields = decode_fields(raw)
        kind = fields.pop("type", None)
        if kind is not None and kind != cls.TYPE:
            raise ValueError(f"entry of type {kind!r} where {cls.TYPE!r} was expected")
        data: dict[str, Any] = {}
        for key, nested in _entry_keys(cls):
            if key not in fields:
                continue
            value = fields[key]
            data[key] = orjson.loads(value) if nested and value[:1] in "[{" else value
        return cls.model_validate(data)


class Event(StreamEvent):
    """An event of one trade: the identity every stage's event carries the same."""

    trade_id: str
    netuid: int = Field(ge=0, le=65535)
    hotkey: str
    source: Source

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Self:
        """As `StreamEvent.from_fields`, and the hotkey must be a valid SS58 address."""
        event = super().from_fields(raw)
        if not is_valid_ss58(event.hotkey):
            raise ValueError("hotkey is not a valid SS58 address")
        return event

    def next(self, cls: type[E], **fields: Any) -> E:
        """The trade's next event: the identity travels from this one, never copied by hand."""
        return cls(
            trade_id=self.trade_id,
            netuid=self.netuid,
            hotkey=self.hotkey,
            source=self.source,
            **fields,
        )


E = TypeVar("E", bound=Event)


_ENTRY_KEYS: dict[type[StreamEvent], tuple[tuple[str, bool], ...]] = {}


def _entry_keys(cls: type[StreamEvent]) -> tuple[tuple[str, bool], ...]:
    """(entry field name, holds JSON) for each field of `cls`: a list or dict field is one
    JSON field of the entry. Worked out once per class."""
    keys = _ENTRY_KEYS.get(cls)
    if keys is None:
        keys = _ENTRY_KEYS[cls] = tuple(
            (info.alias or name, any(k in str(info.annotation) for k in ("list", "dict")))
            for name, info in cls.model_fields.items()
        )
    return keys


def text(value: Any) -> str:
    """A Redis reply value (bytes or str) as str."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    return value.decode() if kind is bytes else str(value)


def decode_fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A stream entry's fields as str → str (as they are when already decoded)."""
    if all(type(k) is str and type(v) is str for k, v in raw.items()):
        return dict(raw)
    return {text(k): text(v) for k, v in raw.items()}


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value).decode()
    return str(value)


class DividendRequested(Event):
    TYPE: ClassVar[str] = "dividend_requested"

    request_id: str | None = None
    requested_by: str | None = None
    replay_of: str | None = None  # the trade this one re-runs (replay --as-new-trade)


class TweetsFetched(Event):
    TYPE: ClassVar[str] = "tweets_fetched"

    count: int
    tweet_source: str  # datura | cache | none
    query: str
    tweets: list[Tweet] = Field(default_factory=list)
    reason: str | None = None  # why there are no tweets, when there are none


class SentimentScored(Event):
    TYPE: ClassVar[str] = "sentiment_scored"

    score: int | None = None  # None: no trade (no usable score and no fallback)
    backend: str  # llm | vader | none
    model: str | None = None
    tweets_scored: int = 0
    reason: str | None = None


class StakeExecuted(Event):
    TYPE: ClassVar[str] = "stake_executed"

    # The decision: why, which way and how much (decimal strings: the trade's TAO amount, and
    # the alpha an unstake sells).
    reason: str | None = None
    direction: str  # add | remove | none
    amount_tao: str | None = None
    amount_alpha: str | None = None
    # What became of it: succeeded | failed | skipped | rejected | dry_run | submitting |
    # unknown | included, and the chain's answer once an extrinsic was sent.
    status: str
    success: bool | None = None
    extrinsic_hash: str | None = None
    block: int | None = None
    error_name: str | None = None


class DeadLetter(StreamEvent):
    """An entry no stage could handle: where it was, how often it was delivered, the last
    error and the entry itself (`original`, its fields as JSON). The identity fields are
    copied as they were (possibly malformed: that can be why it is here), so
    `XRANGE stream:dead_letter` can be filtered by trade without parsing `original`."""

    TYPE: ClassVar[str] = "dead_letter"

    trade_id: str | None = None
    netuid: str | None = None
    hotkey: str | None = None
    source: str | None = None
    from_stream: str = Field(alias="stream")
    group: str
    entry_id: str
    deliveries: int
    error: str
    original: str

    @classmethod
    def of(
        cls,
        stream: str,
        group: str,
        entry_id: str,
        fields: Mapping[str, str],
        *,
        deliveries: int,
        error: str,
    ) -> DeadLetter:
        """The dead letter of one entry (its decoded fields)."""
        return cls(
            trade_id=fields.get("trade_id"),
            netuid=fields.get("netuid"),
            hotkey=fields.get("hotkey"),
            source=fields.get("source"),
            from_stream=stream,
            group=group,
            entry_id=entry_id,
            deliveries=deliveries,
            error=error,
            original=orjson.dumps(dict(fields)).decode(),
        )

    @property
    def original_fields(self) -> dict[str, str]:
        """The dead entry's fields as they were written."""
        data = orjson.loads(self.original)
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
