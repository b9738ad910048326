"""The one tweet schema: parsed from Datura's reply, stored in `tweet_batches.tweets`, carried
by `tweets_fetched` and read by the prompt and VADER, with the same fields all the way.

Datura documents a bare array, yet fields come and go between tweets (and between API
versions): anything missing gets a default; an entry without text is dropped because there
is nothing to score; duplicates (same id) are dropped so one viral tweet cannot count twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator, model_validator

TWITTER_DATE_FORMAT: Final = "%a %b %d %H:%M:%S %z %Y"


class Tweet(BaseModel):
    """A tweet as every part of the pipeline sees it, engagement included (the prompt and
    VADER's weights read it)."""

    model_config = ConfigDict(frozen=True)

    id: str | None = None
    text: str
    created_at: datetime | None = None
    username: str | None = None
    user_name: str | None = None
    like_count: int = 0
    retweet_count: int = 0
    reply_count: int = 0
    url: str | None = None
    lang: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        # "likes": how batches stored before engagement was kept whole named it.
        if isinstance(data, dict) and "like_count" not in data and "likes" in data:
            data = {**data, "like_count": data["likes"]}
        return data

    @field_validator("id", "username", "user_name", "url", "lang", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        text = _clean(str(value)).strip()
        return text or None

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        # Stored rows written by hand or by another tool may hold a null: read as no text.
        return "" if value is None else _clean(str(value))

    @field_validator("like_count", "retweet_count", "reply_count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        if isinstance(value, bool) or value is None:
            return 0
        if isinstance(value, int):
            return max(0, value)
        try:
            return max(0, int(float(value)))
        except (TypeError, ValueError, OverflowError):
            return 0

    @field_validator("created_at", mode="before")
    @classmethod
    def _when(cls, value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return parse_created_at(value) if isinstance(value, str) else None

    @classmethod
    def from_datura(cls, item: Any) -> Tweet | None:
        """One element of a Datura search reply, or None when it has no text to score."""
        if not isinstance(item, dict):
            return None
        text = item.get("text") or item.get("full_text")
        if not isinstance(text, str) or not text.strip():
            return None
        raw_user = item.get("user")
        user: dict[str, Any] = raw_user if isinstance(raw_user, dict) else {}
        return cls(
            id=item.get("id"),
            text=text.strip(),
            created_at=item.get("created_at"),
            username=user.get("username"),
            user_name=user.get("name"),
            like_count=item.get("like_count"),
            retweet_count=item.get("retweet_count"),
            reply_count=item.get("reply_count"),
            url=item.get("url"),
            lang=item.get("lang"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601): the stored and streamed form."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> Tweet:
        """The inverse of `to_dict`, as lenient as the search parser."""
        return cls.model_validate(data)


def _clean(text: str) -> str:
    """Without NUL characters: PostgreSQL's jsonb refuses `\\u0000`, and one such tweet
    would fail every record written beside it."""
    return text.replace("\x00", "") if "\x00" in text else text


def tweets_of(items: list[Any]) -> tuple[list[Tweet], int]:
    """The usable, distinct tweets of a Datura reply's array, and how many were not."""
    tweets: list[Tweet] = []
    seen: set[str] = set()
    skipped = 0
    for item in items:
        tweet = Tweet.from_datura(item)
        if tweet is None or (tweet.id is not None and tweet.id in seen):
            skipped += 1
            continue
        if tweet.id is not None:
            seen.add(tweet.id)
        tweets.append(tweet)
    return tweets, skipped


def parse_created_at(value: str) -> datetime | None:
    """Classic Twitter dates (`Thu Feb 20 10:51:44 +0000 2025`), ISO 8601 as a fallback."""
    value = value.strip()
    if not value:
        return None
    if value[0].isdigit():  # ISO 8601, as stored and streamed
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        return datetime.strptime(value, TWITTER_DATE_FORMAT).astimezone(UTC)
    except ValueError:
        return None


_TWEETS: Final = TypeAdapter(list[Tweet])


def dump_tweets(value: Any) -> str:
    """Tweets (models or their dicts) as the JSON stored in `tweet_batches.tweets`."""
    return _TWEETS.dump_json(_TWEETS.validate_python(value)).decode()


def load_tweets(value: str | bytes) -> list[Tweet]:
    """The stored JSON back as tweets."""
    return _TWEETS.validate_json(value)
