"""Everything a request handler needs, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from gateway.auth import Authenticator
from gateway.limits import FailedAuthThrottle
from gateway.ratelimit import RateLimiter
from gateway.trades.trigger import TradeService
from shared.chain import ChainClient
from shared.settings import Settings
from shared.singleflight import SingleFlight

if TYPE_CHECKING:
    # Only a type here: the dividends domain's modules import gateway.deps, which imports this.
    from gateway.dividends.service import DividendsService


@dataclass(slots=True)
class AppState:
    settings: Settings
    redis: Redis
    chain: ChainClient
    auth: Authenticator
    limiter: RateLimiter
    dividends: DividendsService
    trades: TradeService
    auth_throttle: FailedAuthThrottle
    # /readyz reads the chain at most once per READY_CHAIN_EVERY_S: (monotonic time, result).
    chain_check: tuple[float, dict[str, Any]] | None = None
    # Concurrent /readyz calls that find no fresh result share one chain read.
    chain_probe: SingleFlight[dict[str, Any]] = field(default_factory=SingleFlight)
