"""sentiment stage: tweets_fetched → LLM score (VADER fallback) stored → sentiment_scored."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
from loguru import logger

from pipeline.clients.datura import Tweet
from pipeline.sentiment.scorer import SentimentScorer
from pipeline.stages.records import Publisher, ensure_trade, parse_event
from pipeline.worker import StreamEntry
from shared.cache import TwoLevelCache
from shared.db.models import SentimentScore
from shared.events import SentimentScored, TweetsFetched


class SentimentStage:
    def __init__(
        self, scorer: SentimentScorer, publish: Publisher, *, cache: TwoLevelCache | None = None
    ) -> None:
        self._scorer = scorer
        self._publish = publish
        self._cache = cache

    async def _score(self, netuid: int, tweets: list[Tweet]) -> dict[str, Any]:
        """Score once per (subnet, tweets) for a short while: at temperature 0 the same input
        gives the same answer, so a burst of trades for one subnet costs one LLM call."""

        async def score() -> dict[str, Any]:
            result = await self._scorer.score(netuid, tweets)
            return {
                "score": result.score,
                "backend": result.backend,
                "model": result.model,
                "reason": result.reason,
                "fallback_reason": result.fallback_reason,
            }

        if self._cache is None:
            return await score()
        # Engagement is part of the input (prompt and VADER weights), so part of the key.
        key = [[t.id, t.text, t.like_count, t.retweet_count, t.reply_count] for t in tweets]
        digest = hashlib.sha256(orjson.dumps(key)).hexdigest()[:32]
        cached = await self._cache.get_or_load(f"{netuid}:{digest}", score)
        value: dict[str, Any] = cached.value
        return value

    async def handle(self, entry: StreamEntry) -> None:
        event = parse_event(TweetsFetched, entry)
        log = logger.bind(trade_id=event.trade_id, stage="sentiment")
        _, stored = await asyncio.gather(
            ensure_trade(event), SentimentScore.get_or_none(trade_id=event.trade_id)
        )
        status = None
        if stored is None:
            tweets = [Tweet.from_dict(t) for t in event.tweets]
            result = await self._score(event.netuid, tweets)
            stored = await SentimentScore.create(
                trade_id=event.trade_id, netuid=event.netuid, **result
            )
            status = "scored"
            log.info("scored {score} with {backend} ({reason})", **result)
        else:
            log.info("score already stored for this trade; publishing it again")
        await self._publish(
            SentimentScored(
                trade_id=event.trade_id,
                netuid=event.netuid,
                hotkey=event.hotkey,
                source=event.source,
                score=stored.score,
                backend=stored.backend,
                model=stored.model,
                tweets_scored=event.count,
                reason=stored.fallback_reason or stored.reason,
            ),
            status=status,
        )
