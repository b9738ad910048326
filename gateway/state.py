"""Everything a request handler needs, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.auth import Authenticator
from gateway.dividends.service import DividendsService, TradeService
from gateway.ratelimit import RateLimiter
from shared.chain import ChainClient
from shared.settings import Settings


@dataclass(slots=True)
class AppState:
    settings: Settings
    redis: Redis
    chain: ChainClient
    auth: Authenticator
    limiter: RateLimiter
    dividends: DividendsService
    trades: TradeService
