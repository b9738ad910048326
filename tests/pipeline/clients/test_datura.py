"""DaturaClient against the local fake: request shape, parsing, errors, redirect, cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.clients.datura import (
    DaturaClient,
    MemoryTweetCache,
    Tweet,
    TweetSearch,
    parse_tweets,
)
from pipeline.clients.http import (
    AuthError,
    ExternalAPIError,
    InvalidResponseError,
    NotConfiguredError,
    QuotaError,
    RetryPolicy,
)
from shared.settings import Settings
from tests.fakes import Reply
from tests.fakes.datura import DEFAULT_KEY, FakeDatura, sample_tweets

FAST = RetryPolicy(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.002)


@pytest.fixture
async def datura() -> AsyncIterator[FakeDatura]:
    async with FakeDatura() as fake:
        yield fake


def make_client(fake: FakeDatura, **kwargs: Any) -> DaturaClient:
    options: dict[str, Any] = {"base_url": fake.base_url, "retry": FAST, "timeout_s": 2.0}
    options.update(kwargs)
    key = options.pop("api_key", DEFAULT_KEY)
    return DaturaClient(key, **options)


class TestSearch:
    async def test_request_shape_and_parsed_batch(self, datura: FakeDatura) -> None:
        async with make_client(datura, api_key=SecretStr(DEFAULT_KEY)) as client:
            batch = await client.search(18)
        [req] = datura.requests
        assert req.method == "GET"
        assert req.path == "/twitter"
        assert req.headers["Authorization"] == DEFAULT_KEY  # raw key, no "Bearer "
        assert req.query == {"query": "Netuid 18", "sort": "Latest", "count": "20"}
        assert batch.netuid == 18
        assert batch.query == "Netuid 18"
        assert batch.cached is False
        assert batch.attempts == 1
        assert batch.cost_usd == pytest.approx(0.0003)
        first, second = batch.tweets
        assert first.id == "1892527552029499853"
        assert first.text.startswith("Netuid 18 keeps shipping")
        assert first.created_at == datetime(2025, 2, 20, 10, 51, 44, tzinfo=UTC)
        assert (first.username, first.user_name) == ("subnet_watcher", "Subnet Watcher")
        assert (first.like_count, first.retweet_count, first.reply_count) == (42, 5, 3)
        assert second.username == "tao_skeptic"
        assert second.like_count == 7
        assert batch.texts == [first.text, second.text]

    async def test_count_capped_sort_top_template_and_boolean_filters(
        self, datura: FakeDatura
    ) -> None:
        client = make_client(
            datura,
            count=100,
            sort="Top",
            query_template="#bittensor subnet {netuid}",
            filters={"verified": False, "is_video": True, "min_likes": 3, "lang": "en"},
        )
        async with client:
            await client.search(0)
        assert datura.requests[0].query == {
            "query": "#bittensor subnet 0",
            "sort": "Top",
            "count": "30",
            "verified": "false",
            "is_video": "true",
            "min_likes": "3",
            "lang": "en",
        }

    async def test_empty_result(self, datura: FakeDatura) -> None:
        datura.set_tweets([], query="Netuid 7")
        async with make_client(datura) as client:
            empty = await client.search(7)
            full = await client.search(18)
        assert empty.tweets == ()
        assert len(full.tweets) == 2

    async def test_no_key_sends_nothing(self, datura: FakeDatura) -> None:
        async with make_client(datura, api_key=None) as client:
            assert client.configured is False
            with pytest.raises(NotConfiguredError) as info:
                await client.search(18)
        assert datura.request_count == 0
        assert info.value.retryable is False

    async def test_bearer_prefixed_key_is_rejected_like_the_real_api(
        self, datura: FakeDatura
    ) -> None:
        async with make_client(datura, api_key=f"Bearer {DEFAULT_KEY}") as client:
            with pytest.raises(AuthError) as info:
                await client.search(18)
        assert datura.request_count == 1
        assert info.value.upstream_status == 401
        assert info.value.detail == "Invalid API key"
        assert DEFAULT_KEY not in str(info.value)


class TestErrors:
    async def test_401_not_retried(self, datura: FakeDatura) -> None:
        async with make_client(datura, api_key="wrong-key-123") as client:
            with pytest.raises(AuthError) as info:
                await client.search(18)
        assert datura.request_count == 1
        assert info.value.retryable is False
        assert "wrong-key-123" not in str(info.value)

    async def test_402_out_of_credit_not_retried(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(status=402)
        async with make_client(datura) as client:
            with pytest.raises(QuotaError) as info:
                await client.search(18)
        assert datura.request_count == 1
        assert info.value.detail == "Insufficient balance"

    async def test_422_not_retried(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(status=422)
        async with make_client(datura) as client:
            with pytest.raises(ExternalAPIError) as info:
                await client.search(18)
        assert datura.request_count == 1
        assert info.value.retryable is False
        assert info.value.detail == "query.query: Field required"

    async def test_429_twice_then_success(self, datura: FakeDatura) -> None:
        datura.script(Reply(status=429), Reply(status=429))
        async with make_client(datura) as client:
            batch = await client.search(18)
        assert datura.request_count == 3
        assert batch.attempts == 3
        assert len(batch.tweets) == 2

    async def test_500_retried_then_raised(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(status=500)
        async with make_client(datura) as client:
            with pytest.raises(ExternalAPIError) as info:
                await client.search(18)
        assert datura.request_count == 3  # 1 try + max_retries=2
        assert info.value.retryable is True
        assert info.value.detail == "Internal Server Error"

    async def test_timeout_bounded(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(delay_s=3.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with make_client(datura, timeout_s=0.2) as client:
            with pytest.raises(ExternalAPIError) as info:
                await client.search(18)
        assert datura.request_count == 3
        assert info.value.upstream_status is None
        assert loop.time() - started < 1.5

    async def test_body_not_an_array(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(body={"unexpected": True})
        async with make_client(datura) as client:
            with pytest.raises(InvalidResponseError):
                await client.search(18)


class TestUpstreamLimits:
    async def test_more_tweets_than_asked_for_are_cut_to_the_count(
        self, datura: FakeDatura
    ) -> None:
        """A reply longer than TWEET_COUNT is not stored or scored whole."""
        many = [dict(sample_tweets()[0], id=str(1000 + n)) for n in range(12)]
        datura.default_reply = Reply(body=many)  # ignores `count`, as a broken upstream might
        async with make_client(datura, count=5) as client:
            batch = await client.search(18)
        assert [t.id for t in batch.tweets] == ["1000", "1001", "1002", "1003", "1004"]

    async def test_reply_over_the_body_cap_is_an_invalid_response(self, datura: FakeDatura) -> None:
        huge = [dict(sample_tweets()[0], id=str(n), text="x" * 2000) for n in range(40)]
        datura.default_reply = Reply(body=huge)
        async with make_client(datura, max_body_bytes=32 * 1024) as client:
            with pytest.raises(InvalidResponseError, match="over the 32768-byte cap") as info:
                await client.search(18)
        assert info.value.retryable is False
        assert len(datura.requests) == 1  # not retried

    def test_cap_comes_from_the_setting(self) -> None:
        settings = Settings(_env_file=None, http_max_body_bytes=4096)  # type: ignore[call-arg]
        client = DaturaClient.from_settings(settings)
        assert client._max_body_bytes == 4096


class TestRedirect:
    async def test_301_to_trusted_host_is_followed_and_remembered(self) -> None:
        async with FakeDatura() as legacy, FakeDatura() as new:
            legacy.default_reply = Reply(redirect_to=new.base_url)
            client = make_client(legacy, trusted_origins=(new.base_url,))
            async with client:
                first = await client.search(18)
                second = await client.search(19)
        assert legacy.request_count == 1
        assert new.searches == ["Netuid 18", "Netuid 19"]
        assert new.requests[0].headers["Authorization"] == DEFAULT_KEY
        assert new.requests[0].query["count"] == "20"
        assert len(first.tweets) == len(second.tweets) == 2
        assert client.endpoint == new.base_url + "/twitter"

    async def test_redirect_to_unknown_host_does_not_leak_the_key(self) -> None:
        async with FakeDatura() as legacy, FakeDatura() as stranger:
            legacy.default_reply = Reply(redirect_to=stranger.base_url)
            async with make_client(legacy) as client:
                with pytest.raises(ExternalAPIError) as info:
                    await client.search(18)
        assert stranger.request_count == 0
        assert info.value.retryable is False


class TestParseTweets:
    def test_lenient_parse(self) -> None:
        raw = [
            {"id": 1, "text": "  hello  ", "like_count": "12", "created_at": "garbage"},
            {"id": "1", "text": "duplicate of the first"},
            {"text": "no id, no user, ISO date", "created_at": "2025-02-20T10:00:00Z"},
            {"id": "3", "text": ""},
            {"id": "4"},
            "not a tweet",
            None,
            {
                "id": "5",
                "text": "bad counts",
                "like_count": None,
                "retweet_count": True,
                "user": "not a dict",
            },
        ]
        tweets, skipped = parse_tweets(raw)
        assert skipped == 5
        assert [t.text for t in tweets] == ["hello", "no id, no user, ISO date", "bad counts"]
        assert tweets[0].id == "1"
        assert tweets[0].like_count == 12
        assert tweets[0].created_at is None
        assert tweets[1].id is None
        assert tweets[1].created_at == datetime(2025, 2, 20, 10, 0, tzinfo=UTC)
        assert (tweets[2].like_count, tweets[2].retweet_count, tweets[2].username) == (0, 0, None)

    def test_non_array_body_rejected(self) -> None:
        with pytest.raises(InvalidResponseError):
            parse_tweets("nope")

    def test_tweet_dict_round_trip(self) -> None:
        tweet = Tweet(
            id="9",
            text="moon",
            created_at=datetime(2025, 2, 20, 10, 51, 44, tzinfo=UTC),
            username="u",
            like_count=3,
        )
        assert Tweet.from_dict(tweet.to_dict()) == tweet

    def test_engagement_survives_the_round_trip(self) -> None:
        """The tweets stage stores `to_dict()` and the sentiment stage reads `from_dict()`."""
        tweet = Tweet(id="9", text="moon", like_count=42, retweet_count=5, reply_count=3)
        back = Tweet.from_dict(tweet.to_dict())
        assert (back.like_count, back.retweet_count, back.reply_count) == (42, 5, 3)
        legacy = Tweet.from_dict({"id": "1", "text": "t", "username": "u", "likes": 7})
        assert legacy.like_count == 7  # batches stored before engagement was kept whole


class TestCache:
    async def test_burst_for_one_subnet_costs_one_search(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(delay_s=0.1)
        client = make_client(datura, cache=MemoryTweetCache(60))
        async with client:
            batches = await asyncio.gather(*(client.search(18) for _ in range(20)))
            again = await client.search(18)
            other = await client.search(19)
        assert datura.searches == ["Netuid 18", "Netuid 19"]
        assert {b.tweets for b in batches} == {batches[0].tweets}
        assert again.cached is True
        assert again.tweets == batches[0].tweets
        assert other.cached is False

    async def test_ttl_expiry_and_failures_not_cached(self, datura: FakeDatura) -> None:
        now = [0.0]
        cache = MemoryTweetCache(60, clock=lambda: now[0])
        datura.script(Reply(status=402))
        client = make_client(datura, cache=cache)
        async with client:
            with pytest.raises(QuotaError):
                await client.search(18)
            await client.search(18)
            await client.search(18)
            now[0] = 61.0
            await client.search(18)
        assert datura.request_count == 3

    async def test_concurrent_failure_reaches_every_waiter(self, datura: FakeDatura) -> None:
        datura.default_reply = Reply(status=401, delay_s=0.05)
        client = make_client(datura, cache=MemoryTweetCache(60))
        async with client:
            results = await asyncio.gather(
                *(client.search(18) for _ in range(5)), return_exceptions=True
            )
        assert datura.request_count == 1
        assert all(isinstance(r, AuthError) for r in results)

    async def test_cancelled_caller_does_not_cancel_the_shared_search(
        self, datura: FakeDatura
    ) -> None:
        datura.default_reply = Reply(delay_s=0.2)
        client = make_client(datura, cache=MemoryTweetCache(60))
        async with client:
            first = asyncio.create_task(client.search(18))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(client.search(18))
            await asyncio.sleep(0.01)
            first.cancel()
            batch = await second
        assert isinstance(batch, TweetSearch)
        assert datura.request_count == 1

    async def test_bounded_entries(self) -> None:
        cache = MemoryTweetCache(60, max_entries=2)

        def loader(netuid: int) -> Any:
            async def load() -> TweetSearch:
                return TweetSearch(netuid, "q", (), datetime.now(UTC))

            return load

        for netuid in range(5):
            await cache.get_or_load(netuid, loader(netuid))
        assert len(cache._entries) <= 2


def test_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        datura_api_key=SecretStr("k-123456"),
        datura_base_url="http://127.0.0.1:1/",
        datura_timeout_s=3.0,
        tweet_query_template="Subnet {netuid}",
        tweet_count=25,
        tweet_cache_ttl_s=30,
        http_max_retries=1,
    )
    client = DaturaClient.from_settings(settings)
    assert client.configured
    assert client.endpoint == "http://127.0.0.1:1/twitter"
    assert client.query_for(4) == "Subnet 4"
    assert client._count == 25
    assert client._retry.max_retries == 1
    assert isinstance(client._cache, MemoryTweetCache)
    no_cache = DaturaClient.from_settings(settings.model_copy(update={"tweet_cache_ttl_s": 0}))
    assert no_cache._cache is None
