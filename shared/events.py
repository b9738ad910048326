"""Event schemas for the Redis streams.

Entries are flat and human-readable so `redis-cli XRANGE` shows them as they
are: scalars as strings, nested data as one JSON field. Every entry carries `sig`,
the HMAC of its other fields (shared/signing.py), added here so no publisher can
leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.constants import EVENT_STREAMS, EVENT_VERSION
from shared.ids import iso, new_id, utcnow
from shared.signing import sign
from shared.ss58 import is_valid_ss58

Source = Literal["api", "schedule", "manual", "replay"]


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    TYPE: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_id)
    version: int = EVENT_VERSION
    trade_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    netuid: int = Field(ge=0, le=65535)
    hotkey: str
    source: Source

    @property
    def stream(self) -> str:
        return EVENT_STREAMS[self.TYPE]

    def to_fields(self) -> dict[str, str]:
        """The stream entry, signed with the process's EVENT_SIGNING_KEY."""
        fields: dict[str, str] = {"type": self.TYPE}
        for name, value in self.model_dump(mode="python").items():
            if value is None:
                continue
            fields[name] = _encode(value)
        return sign(fields)

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Self:
        """The event in `raw` (the signature is checked by the stages, see `parse_event`).

        Stricter than construction on purpose: an entry comes from outside the process,
        so it must be of this type and name a valid SS58 hotkey (ValueError otherwise).
        Fields the type does not have are ignored: entries written before a field was
        dropped (`dividend`, `unit`, `block` of old `dividend_requested` entries) still
        parse, and their signature, taken over the raw entry, still verifies.
        """
        fields = decode_fields(raw)
        kind = fields.pop("type", None)
        if kind is not None and kind != cls.TYPE:
            raise ValueError(f"entry of type {kind!r} where {cls.TYPE!r} was expected")
        data: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            if name not in fields:
                continue
            value = fields[name]
            annotation = str(info.annotation)
            if value[:1] in "[{" and ("list" in annotation or "dict" in annotation):
                data[name] = orjson.loads(value)
            else:
                data[name] = value
        event = cls.model_validate(data)
        if not is_valid_ss58(event.hotkey):
            raise ValueError("hotkey is not a valid SS58 address")
        return event


def text(value: Any) -> str:
    """A Redis reply value (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A stream entry's fields as str → str."""
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
    tweets: list[dict[str, Any]] = Field(default_factory=list)  # [{"id", "text", ...}]
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

    direction: str  # add | remove | none
    # succeeded | failed | skipped | rejected | dry_run | submitting | unknown | included
    status: str
    amount_tao: str | None = None
    amount_alpha: str | None = None
    success: bool | None = None
    extrinsic_hash: str | None = None
    block: int | None = None
    error_name: str | None = None
    reason: str | None = None
