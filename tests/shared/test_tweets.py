"""The one tweet schema: lenient parsing of Datura's reply, its stored JSON, and a
`tweet_batches` row read back from PostgreSQL as tweets with their engagement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from tortoise import Tortoise

from shared.db.bulk import insert_many
from shared.db.config import tortoise_config
from shared.db.models import Trade, TweetBatch
from shared.settings import Settings
from shared.tweets import Tweet, dump_tweets, load_tweets, parse_created_at, tweets_of

FEB_20 = datetime(2025, 2, 20, 10, 51, 44, tzinfo=UTC)
TWITTER_DATE = "Thu Feb 20 10:51:44 +0000 2025"


def datura_item(**overrides: Any) -> dict[str, Any]:
    """One element of a Datura search reply, as ../shared/api-samples shows them."""
    item: dict[str, Any] = {
        "user": {"id": "1600", "name": "Subnet Watcher", "username": "subnet_watcher"},
        "id": "1892527552029499853",
        "text": "Netuid 18 keeps shipping. Bullish.",
        "reply_count": 3,
        "view_count": 1200,
        "retweet_count": 5,
        "like_count": 42,
        "url": "https://x.com/subnet_watcher/status/1892527552029499853",
        "created_at": "Thu Feb 20 10:51:44 +0000 2025",
        "lang": "en",
    }
    item.update(overrides)
    return item


class TestFromDatura:
    def test_a_full_item(self) -> None:
        tweet = Tweet.from_datura(datura_item())
        assert tweet == Tweet(
            id="1892527552029499853",
            text="Netuid 18 keeps shipping. Bullish.",
            created_at=FEB_20,
            username="subnet_watcher",
            user_name="Subnet Watcher",
            like_count=42,
            retweet_count=5,
            reply_count=3,
            url="https://x.com/subnet_watcher/status/1892527552029499853",
            lang="en",
        )

    def test_missing_fields_get_defaults(self) -> None:
        tweet = Tweet.from_datura({"text": "  only text  "})
        assert tweet is not None
        assert tweet.text == "only text"
        assert (tweet.id, tweet.created_at, tweet.username, tweet.user_name) == (
            None,
            None,
            None,
            None,
        )
        assert (tweet.like_count, tweet.retweet_count, tweet.reply_count) == (0, 0, 0)
        assert (tweet.url, tweet.lang) == (None, None)

    def test_full_text_when_text_is_missing_or_empty(self) -> None:
        for item in ({"full_text": "the long form"}, {"text": "", "full_text": "the long form"}):
            tweet = Tweet.from_datura(item)
            assert tweet is not None and tweet.text == "the long form"

    @pytest.mark.parametrize(
        "item",
        [
            {"text": ""},
            {"text": "   \n"},
            {"text": None, "full_text": None},
            {"text": 12345},
            {"id": "1", "like_count": 3},
            "a bare string",
            None,
            ["text", "x"],
        ],
    )
    def test_no_text_is_none(self, item: Any) -> None:
        assert Tweet.from_datura(item) is None

    @pytest.mark.parametrize(
        ("raw", "count"),
        [
            (7, 7),
            ("12", 12),
            ("3.9", 3),
            ("1e3", 1000),
            (-4, 0),
            ("-2", 0),
            ("many", 0),
            (None, 0),
            (True, 0),
            (float("inf"), 0),
            ([1], 0),
        ],
    )
    def test_bad_counts_become_whole_non_negative_numbers(self, raw: Any, count: int) -> None:
        tweet = Tweet.from_datura(datura_item(like_count=raw, retweet_count=raw, reply_count=raw))
        assert tweet is not None
        assert (tweet.like_count, tweet.retweet_count, tweet.reply_count) == (count,) * 3

    @pytest.mark.parametrize(
        ("raw", "when"),
        [
            ("Thu Feb 20 10:51:44 +0000 2025", FEB_20),
            ("Thu Feb 20 12:51:44 +0200 2025", FEB_20),
            ("2025-02-20T10:51:44Z", FEB_20),
            ("2025-02-20T10:51:44+00:00", FEB_20),
            ("2025-02-20T11:51:44+01:00", FEB_20),
            ("2025-02-20T10:51:44", FEB_20),  # naive: taken as UTC
            ("", None),
            ("yesterday", None),
            (1740048704, None),
            (None, None),
        ],
    )
    def test_twitter_and_iso_dates(self, raw: Any, when: datetime | None) -> None:
        tweet = Tweet.from_datura(datura_item(created_at=raw))
        assert tweet is not None
        assert tweet.created_at == when
        if when is not None:
            assert tweet.created_at is not None and tweet.created_at.utcoffset() is not None

    def test_twitter_dates_are_given_in_utc(self) -> None:
        parsed = parse_created_at("Thu Feb 20 12:51:44 +0200 2025")
        assert parsed is not None and parsed.utcoffset() == timedelta(0)

    def test_ids_and_names_are_text_or_none(self) -> None:
        tweet = Tweet.from_datura(datura_item(id=1892527552029499853, user="not a dict"))
        assert tweet is not None
        assert tweet.id == "1892527552029499853"
        assert (tweet.username, tweet.user_name) == (None, None)
        blank = Tweet.from_datura(datura_item(id="  ", url=True, lang=""))
        assert blank is not None and (blank.id, blank.url, blank.lang) == (None, None, None)


class TestTweetsOf:
    def test_duplicates_by_id_and_unusable_items_are_skipped_and_counted(self) -> None:
        items: list[Any] = [
            datura_item(id="1", text="first"),
            datura_item(id="2", text="second"),
            datura_item(id="1", text="first, again"),
            {"text": ""},
            "junk",
            {"text": "no id"},
            {"text": "no id"},  # without an id nothing says it is the same tweet
            datura_item(id=2, text="second as a number"),
        ]
        tweets, skipped = tweets_of(items)
        assert [(t.id, t.text) for t in tweets] == [
            ("1", "first"),
            ("2", "second"),
            (None, "no id"),
            (None, "no id"),
        ]
        assert skipped == 4

    def test_an_empty_reply(self) -> None:
        assert tweets_of([]) == ([], 0)


class TestStoredForm:
    def test_legacy_likes_name(self) -> None:
        assert Tweet.from_dict({"text": "old row", "likes": 9}).like_count == 9
        assert Tweet.from_dict({"text": "both", "likes": 9, "like_count": 2}).like_count == 2
        assert load_tweets('[{"text": "old row", "likes": "4"}]')[0].like_count == 4

    def test_dump_and_load_round_trip(self) -> None:
        tweets = [
            Tweet.from_datura(datura_item()),
            Tweet(
                text="plain",
                created_at=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
            ),
        ]
        dumped = dump_tweets(tweets)
        assert isinstance(dumped, str)
        data = orjson.loads(dumped)
        assert data[0]["created_at"] == "2025-02-20T10:51:44Z"
        assert data[0]["like_count"] == 42
        assert load_tweets(dumped) == tweets
        assert load_tweets(dumped.encode()) == tweets
        assert dump_tweets([t.to_dict() for t in tweets if t is not None]) == dumped
        assert [Tweet.from_dict(t.to_dict()) for t in tweets if t is not None] == tweets

    def test_dump_refuses_what_is_not_a_tweet(self) -> None:
        with pytest.raises(ValueError):
            dump_tweets([{"like_count": 3}])


@pytest.fixture
async def orm(clean_db: str) -> AsyncIterator[str]:
    await Tortoise.init(config=tortoise_config(Settings(_env_file=None), clean_db))
    yield clean_db
    await Tortoise.close_connections()


class TestTweetBatchRow:
    async def test_stored_and_read_back_as_tweets_with_their_engagement(self, orm: str) -> None:
        trade = await Trade.create(trade_id="t1", netuid=18, hotkey="hk", source="api")
        first = Tweet.from_datura(datura_item())
        assert first is not None
        second = Tweet(id="2", text="meh", like_count=1, retweet_count=0, reply_count=8)
        await TweetBatch.create(
            trade=trade, source="datura", query="Netuid 18", count=2, tweets=[first, second]
        )
        row = await TweetBatch.get(trade_id="t1")
        assert all(isinstance(t, Tweet) for t in row.tweets)
        assert row.tweets == [first, second]
        assert [(t.like_count, t.retweet_count, t.reply_count) for t in row.tweets] == [
            (42, 5, 3),
            (1, 0, 8),
        ]
        assert row.tweets[0].created_at == FEB_20

    async def test_rows_inserted_in_one_statement_read_back_the_same(self, orm: str) -> None:
        """The stage kit inserts its records with `insert_many`."""
        await Trade.create(trade_id="t2", netuid=3, hotkey="hk", source="api")
        tweet = Tweet(id="5", text="bulk", like_count=11, created_at=FEB_20)
        batch = TweetBatch(trade_id="t2", source="cache", query="Netuid 3", count=1)
        batch.tweets = [tweet]
        assert await insert_many([batch], returning="trade_id") == ["t2"]
        row = await TweetBatch.get(trade_id="t2")
        assert row.tweets == [tweet]

    async def test_the_stored_json_is_the_schema_and_legacy_rows_still_load(self, orm: str) -> None:
        trade = await Trade.create(trade_id="t3", netuid=3, hotkey="hk", source="api")
        await TweetBatch.create(
            trade=trade, source="datura", query="q", count=1, tweets=[Tweet(text="x", like_count=2)]
        )
        conn = await asyncpg.connect(orm)
        try:
            stored = await conn.fetchval(
                "SELECT tweets::text FROM tweet_batches WHERE trade_id='t3'"
            )
            await conn.execute(
                "UPDATE tweet_batches SET tweets = $1::jsonb WHERE trade_id = 't3'",
                orjson.dumps(
                    [{"text": "legacy row", "likes": 6, "created_at": TWITTER_DATE}]
                ).decode(),
            )
        finally:
            await conn.close()
        assert orjson.loads(stored)[0]["like_count"] == 2
        row = await TweetBatch.get(trade_id="t3")
        assert row.tweets == [Tweet(text="legacy row", like_count=6, created_at=FEB_20)]
