"""One sentiment score per batch of tweets, and the record of how it was reached.

Rules (../shared/design.md, "Sentiment and trading rules"):
- no tweets: neutral (0), backend "none", and the reason says so;
- otherwise ask the LLM; if there is no Chutes key, the API fails after its
  retries, or the reply is not the JSON object asked for (parse.py: prose is
  never mined for a number), fall back to VADER when
  SENTIMENT_FALLBACK=vader, else give no score at all (score None: no trade).
The backend that produced the score, and why a fallback happened, are part of
the result so the trade's record can say it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from loguru import logger

from pipeline.clients.chutes import ChutesClient
from pipeline.clients.http import AuthError, ExternalAPIError, NotConfiguredError, QuotaError
from pipeline.sentiment.parse import UnusableReply, read_reply
from pipeline.sentiment.prompt import MAX_TOTAL_CHARS, build_messages
from pipeline.sentiment.vader import VaderScorer, get_vader
from shared.settings import Settings
from shared.tweets import Tweet

Backend = Literal["llm", "vader", "none"]
Fallback = Literal["vader", "none"]

_SNIPPET: Final = 120


@dataclass(frozen=True, slots=True)
class SentimentResult:
    """A score (None means "do not trade"), which backend produced it and why.

    `fallback_reason` is set whenever the LLM was wanted but did not give the
    score, as "<code>: <detail>" with code one of `chutes_not_configured`,
    `chutes_auth`, `chutes_quota`, `chutes_error`, `chutes_unavailable`,
    `unusable_reply`.
    """

    score: int | None
    backend: Backend
    model: str | None
    reason: str
    fallback_reason: str | None = None
    tweets_scored: int = 0

    @property
    def tradable(self) -> bool:
        """Whether a stake decision may act on this result (0 still means "do nothing")."""
        return self.score is not None


class SentimentScorer:
    """Scores tweets with the LLM, falling back as configured. Safe to share across tasks."""

    def __init__(
        self,
        chutes: ChutesClient | None,
        *,
        fallback: Fallback = "vader",
        vader: VaderScorer | None = None,
        max_prompt_chars: int = MAX_TOTAL_CHARS,
    ) -> None:
        self._chutes = chutes
        self._fallback: Fallback = fallback
        self._vader = vader
        self._vader_lock = asyncio.Lock()
        self._max_prompt_chars = max_prompt_chars

    @classmethod
    def from_settings(cls, settings: Settings, chutes: ChutesClient | None) -> SentimentScorer:
        return cls(chutes, fallback=settings.sentiment_fallback)

    async def score(self, netuid: int, tweets: Sequence[Tweet]) -> SentimentResult:
        """The sentiment of `tweets` about `netuid`.

        Only a bug raises: every outside-API failure becomes a fallback result.
        """
        usable = [tweet for tweet in tweets if tweet.text.strip()]
        if not usable:
            return SentimentResult(
                score=0,
                backend="none",
                model=None,
                reason=f"no tweets found for netuid {netuid}: neutral, no trade",
            )
        if self._chutes is None or not self._chutes.configured:
            return await self._fall_back(
                netuid, usable, "chutes_not_configured: CHUTES_API_KEY is not set"
            )

        messages = build_messages(netuid, usable, max_total_chars=self._max_prompt_chars)
        try:
            completion = await self._chutes.complete(messages)
        except ExternalAPIError as exc:
            return await self._fall_back(netuid, usable, f"{_error_code(exc)}: {exc.message}")

        try:
            verdict = read_reply(completion.content)
        except UnusableReply as exc:
            snippet = " ".join(completion.content.split())[:_SNIPPET] or "(empty reply)"
            return await self._fall_back(
                netuid,
                usable,
                f"unusable_reply: {exc} (reply {snippet!r})",
                model=completion.model,
            )
        return SentimentResult(
            score=verdict.score,
            backend="llm",
            model=completion.model,
            reason=verdict.reason or f"LLM score parsed from its reply ({verdict.method})",
            tweets_scored=len(usable),
        )

    async def _fall_back(
        self, netuid: int, tweets: list[Tweet], why: str, *, model: str | None = None
    ) -> SentimentResult:
        log = logger.bind(netuid=netuid, fallback=self._fallback)
        if self._fallback == "vader":
            vader = await self._get_vader()
            score = await vader.ascore_tweets(tweets)
            log.warning("LLM sentiment unavailable ({}); VADER scored {}", why, score)
            return SentimentResult(
                score=score,
                backend="vader",
                model=vader.name,
                reason=f"VADER fallback over {len(tweets)} tweets",
                fallback_reason=why,
                tweets_scored=len(tweets),
            )
        log.warning("LLM sentiment unavailable ({}); SENTIMENT_FALLBACK=none, no trade", why)
        return SentimentResult(
            score=None,
            backend="none",
            model=model,
            reason="no usable LLM score and SENTIMENT_FALLBACK=none: no trade",
            fallback_reason=why,
        )

    async def _get_vader(self) -> VaderScorer:
        """Load VADER off the event loop on first use, once, even under concurrent fallbacks."""
        if self._vader is None:
            async with self._vader_lock:
                if self._vader is None:
                    self._vader = await asyncio.to_thread(get_vader)
        return self._vader


def _error_code(exc: ExternalAPIError) -> str:
    if isinstance(exc, NotConfiguredError):
        return "chutes_not_configured"
    if isinstance(exc, AuthError):
        return "chutes_auth"
    if isinstance(exc, QuotaError):
        return "chutes_quota"
    return "chutes_unavailable" if exc.retryable else "chutes_error"
