"""Builds the stage workers of one process: clients created here, after any fork, and closed
on the way out. Periodic work (the settlement sweep, the metrics sampler) is handed to the
worker as jobs (pipeline/jobs.py), so it drains, reports and stops with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from loguru import logger
from redis.asyncio import Redis
from tortoise import Tortoise

from pipeline.clients.chutes import ChutesClient
from pipeline.clients.datura import DaturaClient
from pipeline.clients.http import make_session
from pipeline.metrics import MetricsServer, Sampler, install_http_metrics, set_pipeline_info
from pipeline.sentiment.scorer import SentimentScorer
from pipeline.stages.records import Publisher
from pipeline.stages.sentiment import SentimentStage
from pipeline.stages.stake import StakeStage
from pipeline.stages.tweets import TweetsStage
from pipeline.tweet_cache import RedisTweetCache
from pipeline.worker import Job, Stage, Worker
from shared.cache import TwoLevelCache
from shared.chain.staking_types import StakeClient
from shared.constants import (
    GROUP_SENTIMENT,
    GROUP_STAKE,
    GROUP_TWEETS,
    KEY_SCORE_CACHE,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_TWEETS_FETCHED,
)
from shared.db.config import tortoise_config
from shared.db.migrate import ensure_sqlite_dir
from shared.db.schema import require_current_schema
from shared.redis import create_redis
from shared.settings import Settings
from shared.signing import configure_signing

STAGE_NAMES = ("tweets", "sentiment", "stake")
# The metrics listener: binding is local and quick; a stop closes open scrapes.
_METRICS_START_S = 5.0
_METRICS_STOP_S = 5.0
# A sampler run reads its sources concurrently, each within the sampler's own timeout.
_SAMPLER_SLACK_S = 5.0


@dataclass(slots=True)
class StakeSetup:
    staker: StakeClient | None
    problem: str | None


@contextlib.asynccontextmanager
async def open_staker(settings: Settings) -> AsyncIterator[StakeSetup]:
    """The wallet's stake client over this process's chain connection, or why there is none."""
    from shared.chain import SubtensorChain
    from shared.chain.staking import WalletProblem, open_stake_client

    chain = SubtensorChain(settings)
    await chain.start()
    try:
        try:
            staker = await open_stake_client(settings, chain)
        except WalletProblem as exc:
            logger.warning("stake stage without a wallet: {}", exc)
            yield StakeSetup(None, str(exc))
        else:
            logger.info("stake stage wallet coldkey {}", staker.coldkey)
            yield StakeSetup(staker, None)
    finally:
        await chain.close()


@contextlib.asynccontextmanager
async def serve_metrics(
    settings: Settings, redis: Redis, *, port: int | None = None
) -> AsyncIterator[MetricsServer | None]:
    """GET /metrics on METRICS_HOST:METRICS_PORT, stopped within a bound on exit. METRICS_PORT=0
    turns it off. A port already taken (a second pipeline on one host) is logged and the
    pipeline runs without an endpoint (and without the sampler job: see `sampler_job`)."""
    port = settings.metrics_port if port is None else port
    if port <= 0:
        yield None
        return
    server = MetricsServer(settings.metrics_host, port)
    try:
        async with asyncio.timeout(_METRICS_START_S):
            await server.start()
    except (OSError, TimeoutError) as exc:
        logger.error(
            "metrics endpoint not started; this process runs without one",
            host=settings.metrics_host,
            port=port,
            error=f"{type(exc).__name__}: {exc}",
        )
        yield None
        return
    logger.info("metrics endpoint listening", host=settings.metrics_host, port=server.port)
    try:
        yield server
    finally:
        await server.stop(timeout_s=_METRICS_STOP_S)


def sampler_job(settings: Settings, redis: Redis) -> Job:
    """The global gauges' sampler as a job of the worker (run only while there is an endpoint
    to show what it reads)."""
    sampler = Sampler(redis, every_s=settings.metrics_sample_every_s)
    return Job(
        "metrics_sampler",
        sampler.sample_once,
        every_s=sampler.every_s,
        timeout_s=sampler.timeout_s + _SAMPLER_SLACK_S,
    )


@contextlib.asynccontextmanager
async def build_worker(
    settings: Settings,
    stages: Sequence[str] = STAGE_NAMES,
    *,
    redis: Redis | None = None,
    stake_setup: StakeSetup | None = None,
    consumer: str | None = None,
    block_ms: int = 1000,
    claim_every_s: float = 5.0,
    init_orm: bool = True,
    metrics_port: int | None = None,
) -> AsyncIterator[Worker]:
    """A Worker running `stages`, with every client it needs, closed on exit.

    Pass `stake_setup` to give the stake stage a client other than the wallet's, and
    `init_orm=False` when the ORM is already initialised in this process (tests).
    The process's metrics endpoint (METRICS_PORT; `metrics_port` overrides it, 0 turns it
    off) runs for as long as the worker is built.
    """
    unknown = set(stages) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stages: {', '.join(sorted(unknown))}")
    configure_signing(settings)  # every stage verifies and signs: no key, no worker
    own_redis = redis is None
    client = redis if redis is not None else create_redis(settings)
    if init_orm:
        orm = tortoise_config(settings)
        ensure_sqlite_dir(orm["connections"]["default"])
        await Tortoise.init(config=orm)
        try:
            await require_current_schema()
        except BaseException:
            await Tortoise.close_connections()
            if own_redis:
                await client.aclose()
            raise
    install_http_metrics()
    session = make_session()
    publish = Publisher(client, maxlen=settings.stream_maxlen)
    datura = DaturaClient.from_settings(
        settings,
        session=session,
        cache=RedisTweetCache(client, ttl_s=int(settings.tweet_cache_ttl_s)),
    )
    chutes = ChutesClient.from_settings(settings, session=session)
    try:
        async with contextlib.AsyncExitStack() as stack:
            built: list[Stage] = []
            # A batch shares one handler timeout: each trade's outside calls get half of it.
            compute_timeout_s = settings.worker_handler_timeout_s / 2
            jobs: list[Job] = []
            if "tweets" in stages:
                tweets = TweetsStage(datura, publish, compute_timeout_s=compute_timeout_s)
                built.append(
                    Stage("tweets", STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS, batch=tweets.run)
                )
            if "sentiment" in stages:
                scorer = SentimentScorer.from_settings(settings, chutes)
                score_cache = None
                if settings.tweet_cache_ttl_s >= 1:
                    score_cache = TwoLevelCache(
                        client,
                        prefix=KEY_SCORE_CACHE,
                        ttl_s=int(settings.tweet_cache_ttl_s),
                        max_local=1024,
                    )
                sentiment = SentimentStage(
                    scorer, publish, cache=score_cache, compute_timeout_s=compute_timeout_s
                )
                built.append(
                    Stage("sentiment", STREAM_TWEETS_FETCHED, GROUP_SENTIMENT, batch=sentiment.run)
                )
            if "stake" in stages:
                setup = stake_setup
                if setup is None:
                    setup = await stack.enter_async_context(open_staker(settings))
                stake = StakeStage(
                    client, setup.staker, publish, settings, wallet_problem=setup.problem
                )
                built.append(Stage("stake", STREAM_SENTIMENT_SCORED, GROUP_STAKE, stake.handle))
                # A sweep is one unit of chain work, bounded like a handler's try.
                jobs.append(
                    stake.settlement_job(
                        every_s=settings.stake_reconcile_every_s,
                        timeout_s=settings.worker_handler_timeout_s,
                    )
                )
            server = await stack.enter_async_context(
                serve_metrics(settings, client, port=metrics_port)
            )
            if server is not None:
                jobs.append(sampler_job(settings, client))
            worker = Worker(
                client,
                built,
                consumer=consumer,
                concurrency=settings.worker_concurrency,
                batch=settings.worker_batch,
                block_ms=block_ms,
                claim_idle_ms=int(settings.worker_claim_idle_s * 1000),
                claim_every_s=claim_every_s,
                max_deliveries=settings.max_deliveries,
                handler_timeout_s=settings.worker_handler_timeout_s,
                dead_letter_maxlen=settings.stream_maxlen,
                outage_backoff_s=(
                    settings.worker_outage_backoff_s,
                    max(settings.worker_outage_backoff_s, settings.worker_outage_backoff_max_s),
                ),
                jobs=jobs,
            )
            set_pipeline_info(worker.consumer, [stage.name for stage in built])
            yield worker
    finally:
        await session.close()
        if init_orm:
            await Tortoise.close_connections()
        if own_redis:
            await client.aclose()
