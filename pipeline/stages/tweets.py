"""tweets stage: dividend_requested → Datura search → tweets stored → tweets_fetched."""

from __future__ import annotations

from loguru import logger

from pipeline.clients.datura import DaturaClient
from pipeline.clients.http import AuthError, ExternalAPIError, QuotaError
from pipeline.entries import Unavailable
from pipeline.stages.kit import BatchStage
from pipeline.stages.records import Publisher
from shared.db.models import TweetBatch
from shared.events import DividendRequested, TweetsFetched
from shared.ids import utcnow


class TweetsStage(BatchStage[DividendRequested, TweetBatch]):
    name = "tweets"
    status = "tweets_fetched"
    before = ("requested",)

    def __init__(
        self, datura: DaturaClient, publish: Publisher, *, compute_timeout_s: float | None = None
    ) -> None:
        super().__init__(publish, compute_timeout_s=compute_timeout_s)
        self._datura = datura

    def ends(self, record: TweetBatch) -> str | None:
        return record.error  # a refused search; the reason is recorded once

    def next(self, event: DividendRequested, record: TweetBatch) -> TweetsFetched:
        found = {"count": record.count, "tweet_source": record.source, "tweets": record.tweets}
        reason = None if record.count else "no tweets found"
        return event.next(TweetsFetched, query=record.query, reason=reason, **found)

    async def compute(self, event: DividendRequested) -> TweetBatch:
        query = self._datura.query_for(event.netuid)
        found = TweetBatch(trade_id=event.trade_id, query=query, count=0, tweets=[])
        found.fetched_at = utcnow()
        if not self._datura.configured:
            found.source = "none"
            return found
        try:
            search = await self._datura.search(event.netuid)
        except (AuthError, QuotaError) as exc:
            # Not retried: the trade ends here, with why.
            found.source = "datura"
            found.error = (
                f"Datura refused the search ({exc.code}, HTTP {exc.upstream_status}): {exc.message}"
            )
            logger.warning("trade ended: {}", found.error)
            return found
        except ExternalAPIError as exc:
            if exc.retryable:
                # An outage: waited out in place, spending none of the entry's deliveries.
                raise Unavailable(f"Datura unavailable: {exc.message}") from exc
            raise
        found.source = "cache" if search.cached else "datura"
        found.query = search.query
        found.tweets = list(search.tweets)
        found.count = len(search.tweets)
        return found
