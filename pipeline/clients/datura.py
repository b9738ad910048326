"""Datura (Desearch) tweet search: `GET {DATURA_BASE_URL}/twitter`.

The tweets stage asks for the latest tweets about one subnet. A burst of trades
for one subnet must not cost one paid search each, so searches go through a
small per-netuid cache with single-flight (`TweetCache`); the in-process one
here can be swapped for a cross-process one with the same two-line interface.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import aiohttp
from loguru import logger
from pydantic import SecretStr
from yarl import URL

from pipeline.clients.base import APIClient
from pipeline.clients.http import DEFAULT_MAX_BODY_BYTES, InvalidResponseError, RetryPolicy
from shared.settings import Settings
from shared.tweets import Tweet, tweets_of

SERVICE: Final = "datura"
MAX_COUNT: Final = 30
# The legacy host answers with a 301 to the new one; the key may follow it there.
DEFAULT_TRUSTED_ORIGINS: Final = ("https://apis.datura.ai", "https://api.desearch.ai")

Sort = Literal["Latest", "Top"]
ParamValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class TweetSearch:
    """One search's result. `cached` is true when it came from the cache, not a new search."""

    netuid: int
    query: str
    tweets: tuple[Tweet, ...]
    fetched_at: datetime
    skipped: int = 0
    cost_usd: float | None = None
    cached: bool = False
    attempts: int = 1

    @property
    def texts(self) -> list[str]:
        return [tweet.text for tweet in self.tweets]


def parse_tweets(raw: Any) -> tuple[list[Tweet], int]:
    """Tweets from a search body (see shared/tweets.py), and how many entries were unusable."""
    items: Any = raw
    if isinstance(raw, dict):
        items = raw.get("tweets", raw.get("data"))
    if not isinstance(items, list):
        raise InvalidResponseError(
            SERVICE,
            200,
            f"expected a JSON array of tweets, got {type(raw).__name__}",
            retryable=False,
        )
    return tweets_of(items)


def _param(value: ParamValue) -> str:
    """Datura wants booleans as the strings "true"/"false" (Python's str() says "True")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


Loader = Callable[[], Awaitable[TweetSearch]]


class TweetCache(Protocol):
    """Per-netuid search results with single-flight; swap in a Redis-backed one later."""

    async def get_or_load(self, netuid: int, loader: Loader) -> TweetSearch:
        """A fresh cached batch for `netuid`, or the result of exactly one `loader()` call
        shared by every concurrent caller. Failures are not cached."""
        ...


class MemoryTweetCache:
    """In-process TTL cache with single-flight, bounded in size.

    The load runs as its own task and callers await it shielded, so a caller
    cancelled mid-search (a worker shutting down) neither cancels the search for
    the others nor leaves them waiting forever.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[int, tuple[float, TweetSearch]] = {}
        self._inflight: dict[int, asyncio.Task[TweetSearch]] = {}

    async def get_or_load(self, netuid: int, loader: Loader) -> TweetSearch:
        entry = self._entries.get(netuid)
        if entry is not None:
            expires, batch = entry
            if self._clock() < expires:
                return replace(batch, cached=True)
            del self._entries[netuid]
        task = self._inflight.get(netuid)
        if task is None:
            task = asyncio.create_task(self._load(netuid, loader), name=f"tweets:{netuid}")
            # Every waiter may be gone by the time it fails; mark the error as seen.
            task.add_done_callback(_consume_error)
            self._inflight[netuid] = task
        return await asyncio.shield(task)

    async def _load(self, netuid: int, loader: Loader) -> TweetSearch:
        try:
            batch = await loader()
        finally:
            self._inflight.pop(netuid, None)
        if self._ttl_s > 0:
            if len(self._entries) >= self._max_entries:
                self._evict()
            self._entries[netuid] = (self._clock() + self._ttl_s, batch)
        return batch

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        self._entries.clear()


def _consume_error(task: asyncio.Task[TweetSearch]) -> None:
    if not task.cancelled():
        task.exception()


class DaturaClient(APIClient):
    """Tweet search for one subnet at a time.

    Sort is "Latest" by default: a trade acts on what people say now, and the
    pipeline rescores every few minutes; "Top" favours high-engagement tweets
    that can be weeks old, so the score would barely move as opinion changes.
    Without a key the stage records "no tweet source" instead of searching.
    """

    service = SERVICE
    key_setting = "DATURA_API_KEY"
    auth_prefix = ""  # Datura takes the bare key

    def __init__(
        self,
        api_key: SecretStr | str | None,
        *,
        base_url: str = "https://apis.datura.ai",
        timeout_s: float = 20.0,
        query_template: str = "Netuid {netuid}",
        count: int = 20,
        sort: Sort = "Latest",
        filters: Mapping[str, ParamValue] | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        cache: TweetCache | None = None,
        trusted_origins: Sequence[str] = DEFAULT_TRUSTED_ORIGINS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        super().__init__(api_key, timeout_s, retry, session, max_body_bytes)
        self._endpoint = str(URL(base_url.rstrip("/") + "/twitter"))
        self._query_template = query_template
        self._count = max(1, min(count, MAX_COUNT))
        self._sort: Sort = sort
        self._filters = {k: _param(v) for k, v in (filters or {}).items()}
        self._cache = cache
        self._trusted_origins = tuple(trusted_origins)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        cache: TweetCache | None = None,
    ) -> DaturaClient:
        """Client configured from DATURA_* / TWEET_* settings; in-process cache unless given one."""
        if cache is None and settings.tweet_cache_ttl_s > 0:
            cache = MemoryTweetCache(settings.tweet_cache_ttl_s)
        return cls(
            settings.datura_api_key,
            base_url=settings.datura_base_url,
            timeout_s=settings.datura_timeout_s,
            query_template=settings.tweet_query_template,
            count=settings.tweet_count,
            retry=RetryPolicy(max_retries=settings.http_max_retries),
            session=session,
            cache=cache,
            max_body_bytes=settings.http_max_body_bytes,
        )

    @property
    def endpoint(self) -> str:
        """The search URL in use (it moves if the API answered a permanent redirect)."""
        return self._endpoint

    def query_for(self, netuid: int) -> str:
        return self._query_template.format(netuid=netuid)

    async def search(self, netuid: int) -> TweetSearch:
        """Latest tweets about `netuid`; cached per netuid when a cache is set.

        Raises `NotConfiguredError` without a key, `AuthError` / `QuotaError` on
        401/402 (not retried), `ExternalAPIError` with `retryable=True` once
        429/5xx/timeouts outlast the retries.
        """
        self._require_key()
        if self._cache is None:
            return await self._search(netuid)
        return await self._cache.get_or_load(netuid, lambda: self._search(netuid))

    async def _search(self, netuid: int) -> TweetSearch:
        query = self.query_for(netuid)
        params = {
            "query": query,
            "sort": self._sort,
            "count": str(self._count),
            **self._filters,
        }
        result = await self._request(
            "GET", self._endpoint, params=params, trusted_origins=self._trusted_origins
        )
        if result.permanent_redirect and result.permanent_redirect != self._endpoint:
            logger.warning(
                "datura search moved permanently to {}; using it from now on, "
                "update DATURA_BASE_URL",
                result.permanent_redirect,
            )
            self._endpoint = result.permanent_redirect
        tweets, skipped = parse_tweets(result.body)
        # Datura may answer more than asked for: only TWEET_COUNT are kept, stored and scored.
        extra = max(0, len(tweets) - self._count)
        tweets = tweets[: self._count]
        batch = TweetSearch(
            netuid=netuid,
            query=query,
            tweets=tuple(tweets),
            fetched_at=datetime.now(UTC),
            skipped=skipped,
            cost_usd=_cost(result.headers.get("X-Desearch-Cost-Usd")),
            attempts=result.attempts,
        )
        logger.bind(netuid=netuid, service=SERVICE).info(
            "datura search {!r}: {} tweets ({} skipped, {} over TWEET_COUNT) in {:.2f}s, {} tries",
            query,
            len(tweets),
            skipped,
            extra,
            result.elapsed_s,
            result.attempts,
        )
        return batch


def _cost(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


__all__ = [
    "DaturaClient",
    "MemoryTweetCache",
    "Tweet",
    "TweetCache",
    "TweetSearch",
    "parse_tweets",
]
