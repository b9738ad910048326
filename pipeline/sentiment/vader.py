"""Offline sentiment with VADER, the fallback when the LLM cannot give a usable score.

VADER's stock lexicon was built from general social media and misses (or
misreads) crypto slang: "bullish", "moon", "rekt", "rug" carry no weight there,
and "pump" is neutral. A small overlay fixes the words that matter most for
subnet tweets. Scores are a weighted mean of VADER's per-tweet compound score
in [-1, 1], scaled to -100..100; weights grow with engagement (log of likes and
retweets) so one widely liked tweet counts for more than one ignored reply,
without letting a viral tweet drown everything else.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Final

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from pipeline.sentiment.parse import clamp
from shared.tweets import Tweet

MODEL_NAME: Final = "vader-crypto"
INLINE_MAX: Final = 64

# Valences on VADER's -4..4 scale; single tokens only (VADER matches words, lowercased).
CRYPTO_LEXICON: Final[Mapping[str, float]] = {
    "bullish": 2.5,
    "bull": 1.5,
    "bullrun": 2.5,
    "bearish": -2.5,
    "bear": -1.5,
    "moon": 2.0,
    "mooning": 2.5,
    "moonshot": 2.2,
    "pump": 1.2,
    "pumping": 1.8,
    "pumped": 1.2,
    "dump": -2.0,
    "dumping": -2.2,
    "dumped": -2.0,
    "hodl": 1.5,
    "hodling": 1.5,
    "accumulating": 1.2,
    "undervalued": 1.8,
    "overvalued": -1.5,
    "ath": 2.0,
    "lfg": 2.0,
    "wagmi": 2.0,
    "ngmi": -2.0,
    "gem": 1.8,
    "rug": -3.0,
    "rugged": -3.2,
    "rugpull": -3.5,
    "rugpulled": -3.5,
    "rekt": -2.8,
    "fud": -2.0,
    "scam": -3.0,
    "scammer": -3.0,
    "ponzi": -3.0,
    "honeypot": -3.0,
    "shill": -1.5,
    "shilling": -1.5,
    "bagholder": -1.8,
    "bagholders": -1.8,
    "capitulation": -2.5,
    "liquidated": -2.5,
    "exploit": -2.5,
    "exploited": -2.8,
    "hacked": -2.8,
    "outage": -2.0,
    "downtime": -1.8,
    "deregistered": -2.5,
    "delisted": -2.5,
}


class VaderScorer:
    """A VADER analyzer with the crypto overlay, built once per process (see `get_vader`)."""

    def __init__(self, extra_lexicon: Mapping[str, float] | None = None) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        self._analyzer.lexicon.update(CRYPTO_LEXICON)
        if extra_lexicon:
            self._analyzer.lexicon.update({k.lower(): v for k, v in extra_lexicon.items()})

    @property
    def name(self) -> str:
        return MODEL_NAME

    def compound(self, text: str) -> float:
        """VADER's compound score of one text, in [-1, 1]."""
        return float(self._analyzer.polarity_scores(text)["compound"])

    def score_texts(self, texts: Sequence[str], weights: Sequence[float] | None = None) -> int:
        """Weighted mean compound of `texts` scaled to -100..100 (0 when there is nothing)."""
        if weights is not None and len(weights) != len(texts):
            raise ValueError("weights and texts differ in length")
        total = 0.0
        weight_sum = 0.0
        for index, text in enumerate(texts):
            if not text.strip():
                continue
            weight = weights[index] if weights is not None else 1.0
            total += weight * self.compound(text)
            weight_sum += weight
        if weight_sum <= 0:
            return 0
        return clamp(round(100 * total / weight_sum))

    def score_tweets(self, tweets: Sequence[Tweet]) -> int:
        weights = [1.0 + math.log1p(t.like_count + t.retweet_count) for t in tweets]
        return self.score_texts([t.text for t in tweets], weights)

    async def ascore_tweets(self, tweets: Sequence[Tweet], *, inline_max: int = INLINE_MAX) -> int:
        """`score_tweets` that leaves the event loop free for large batches.

        A tweet takes VADER some 15-50 µs, so a normal search (≤ 30 tweets) is
        scored inline; a thread hop only pays off for bigger batches.
        """
        if len(tweets) <= inline_max:
            return self.score_tweets(tweets)
        return await asyncio.to_thread(self.score_tweets, tweets)


@lru_cache(maxsize=1)
def get_vader() -> VaderScorer:
    """The process-wide scorer: loading VADER's lexicon file is sync and takes ~25 ms."""
    return VaderScorer()
