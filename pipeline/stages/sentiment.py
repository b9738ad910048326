"""sentiment stage: tweets_fetched → LLM score (VADER fallback) stored → sentiment_scored."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from loguru import logger

from pipeline.sentiment.scorer import SentimentScorer
from pipeline.stages.kit import BatchStage
from pipeline.stages.records import Publisher
from shared.cache import TwoLevelCache
from shared.db.models import SentimentScore
from shared.events import SentimentScored, TweetsFetched
from shared.ids import utcnow


class SentimentStage(BatchStage[TweetsFetched, SentimentScore]):
    name = "sentiment"
    status = "scored"
    before = ("requested", "tweets_fetched")

    def __init__(
        self,
        scorer: SentimentScorer,
        publish: Publisher,
        *,
        cache: TwoLevelCache | None = None,
        compute_timeout_s: float | None = None,
    ) -> None:
        super().__init__(publish, compute_timeout_s=compute_timeout_s)
        self._scorer = scorer
        self._cache = cache

    def next(self, event: TweetsFetched, record: SentimentScore) -> SentimentScored:
        reason = record.fallback_reason or record.reason
        scored = {"score": record.score, "backend": record.backend, "model": record.model}
        return event.next(SentimentScored, tweets_scored=event.count, reason=reason, **scored)

    async def compute(self, event: TweetsFetched) -> SentimentScore:
        result = await self._score(event)
        logger.info("scored {score} with {backend} ({reason})", **result)
        return SentimentScore(
            trade_id=event.trade_id, netuid=event.netuid, scored_at=utcnow(), **result
        )

    async def _score(self, event: TweetsFetched) -> dict[str, Any]:
        """Score once per (subnet, tweets) for a short while: at temperature 0 the same input
        gives the same answer, so a burst of trades for one subnet costs one LLM call."""

        async def score() -> dict[str, Any]:
            result = await self._scorer.score(event.netuid, event.tweets)
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
        key = [[t.id, t.text, t.like_count, t.retweet_count, t.reply_count] for t in event.tweets]
        digest = hashlib.sha256(orjson.dumps(key)).hexdigest()[:32]
        cached = await self._cache.get_or_load(f"{event.netuid}:{digest}", score)
        value: dict[str, Any] = cached.value
        return value
