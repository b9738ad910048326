"""tweets stage: dividend_requested → Datura search → tweets stored → tweets_fetched."""

from __future__ import annotations

import asyncio

from loguru import logger

from pipeline.clients.datura import DaturaClient
from pipeline.clients.http import AuthError, ExternalAPIError, QuotaError
from pipeline.stages.records import Publisher, ensure_trade, parse_event, set_status
from pipeline.worker import StreamEntry, Unavailable
from shared.db.models import TweetBatch
from shared.events import DividendRequested, TweetsFetched


class TweetsStage:
    def __init__(self, datura: DaturaClient, publish: Publisher) -> None:
        self._datura = datura
        self._publish = publish

    async def handle(self, entry: StreamEntry) -> None:
        event = parse_event(DividendRequested, entry)
        log = logger.bind(trade_id=event.trade_id, stage="tweets")
        # Independent round trips run together: each one is a hop's latency.
        _, stored = await asyncio.gather(
            ensure_trade(event), TweetBatch.get_or_none(trade_id=event.trade_id)
        )
        status = None
        if stored is None:
            stored = await self._fetch(event)
            if stored.error is not None:
                await set_status(event.trade_id, "ended", stored.error)
                log.warning("trade ended: {}", stored.error)
                return
            status = "tweets_fetched"
        else:
            log.info("tweets already stored for this trade; publishing them again")
        if stored.error is not None:
            return  # the trade ended here; its reason is recorded
        await self._publish(
            TweetsFetched(
                trade_id=event.trade_id,
                netuid=event.netuid,
                hotkey=event.hotkey,
                source=event.source,
                count=stored.count,
                tweet_source=stored.source,
                query=stored.query,
                tweets=stored.tweets,
                reason=None if stored.count else "no tweets found",
            ),
            status=status,
        )

    async def _fetch(self, event: DividendRequested) -> TweetBatch:
        query = self._datura.query_for(event.netuid)
        if not self._datura.configured:
            return await TweetBatch.create(
                trade_id=event.trade_id,
                source="none",
                query=query,
                count=0,
                tweets=[],
            )
        try:
            batch = await self._datura.search(event.netuid)
        except (AuthError, QuotaError) as exc:
            reason = (
                f"Datura refused the search ({exc.code}, HTTP {exc.upstream_status}): {exc.message}"
            )
            # Not retried: the trade ends here (the caller records why).
            return await TweetBatch.create(
                trade_id=event.trade_id,
                source="datura",
                query=query,
                count=0,
                tweets=[],
                error=reason,
            )
        except ExternalAPIError as exc:
            if exc.retryable:
                # An outage: waited out in place, spending none of the entry's deliveries.
                raise Unavailable(f"Datura unavailable: {exc.message}") from exc
            raise
        # The whole tweet, engagement included: the prompt and VADER's weights read it.
        tweets = [t.to_dict() for t in batch.tweets]
        return await TweetBatch.create(
            trade_id=event.trade_id,
            source="cache" if batch.cached else "datura",
            query=batch.query,
            count=len(tweets),
            tweets=tweets,
        )
