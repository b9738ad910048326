"""The coldkey lane: one extrinsic at a time per coldkey, across processes.

Three guards, because a lock alone cannot be trusted with money:
- a Redis lease (token-owned lock) renewed every ttl/3 while held, so a slow submit
  never outlives it; a crashed holder's lease lapses after one TTL. The holder also keeps
  a monotonic deadline (last successful renewal + TTL − one renewal period): when
  renewals keep failing (Redis unreachable) the key may lapse without anyone telling us,
  and `ensure_held` refuses once the deadline has passed;
- the persisted `submitting` / `unknown` rows of the coldkey, checked before the chain is
  read and again under the lease before anything is signed: while one of its extrinsics
  is unsettled, the lane stays closed whatever happened to the lease (a handler timeout,
  a lapse, a restart);
- the database itself: a partial unique index on stake_actions(coldkey) over those two
  statuses (migration 0004), so a second unsettled row of one coldkey can never be
  inserted, whatever the lease says; the stake stage reads that refusal as "wait".

Waiting here (the in-process queue, then the Redis lease) is bounded by `wait_s` in all,
so it never turns into a handler timeout that spends a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from pipeline.worker import Unavailable
from shared.constants import KEY_COLDKEY_LOCK
from shared.db.models import StakeAction
from shared.settings import Settings
from shared.tasks import cancel_and_wait

UNSETTLED = ("submitting", "unknown")
RENEWALS_PER_TTL = 3
ACQUIRE_POLL_S = 0.1  # redis-py's own retry interval for a blocking acquire
STOP_BOUND_S = 5.0


class Lease:
    """A held lane. `lost` is set when a renewal finds the lease no longer ours; `deadline`
    (monotonic) is when it may have lapsed unnoticed: the last successful acquire or
    renewal (timed from before the request) + TTL − one renewal period."""

    def __init__(self, coldkey: str, lock: Lock, *, ttl_s: float, taken_at: float) -> None:
        self.coldkey = coldkey
        self.lock = lock
        self.lost = asyncio.Event()
        self.renewals = 0
        self._valid_s = ttl_s - ttl_s / RENEWALS_PER_TTL
        self.deadline = taken_at + self._valid_s

    def renewed(self, requested_at: float) -> None:
        self.renewals += 1
        self.deadline = requested_at + self._valid_s

    def ensure_held(self, when: str = "before signing") -> None:
        if self.lost.is_set():
            raise Unavailable(f"coldkey lease lost {when}; nothing sent")
        if time.monotonic() >= self.deadline:
            raise Unavailable(
                f"coldkey lease may have lapsed {when} (not renewed in time); nothing sent"
            )


async def unsettled_extrinsic(coldkey: str) -> StakeAction | None:
    """The coldkey's oldest stake action whose extrinsic may still be pending."""
    return await StakeAction.filter(coldkey=coldkey, status__in=UNSETTLED).order_by("id").first()


async def ensure_no_unsettled(coldkey: str) -> None:
    """Raise `Unavailable` while one of the coldkey's extrinsics is unsettled."""
    pending = await unsettled_extrinsic(coldkey)
    if pending is not None:
        raise Unavailable(
            f"coldkey lane closed: trade {pending.trade_id} has an unsettled extrinsic "
            f"({pending.status})"
        )


class ColdkeyLane:
    def __init__(self, redis: Redis, *, ttl_s: float, wait_s: float) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._local: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> ColdkeyLane:
        """The stake stage's lane, timed by its settings."""
        # A live holder needs at most one account read and one submit; a crashed holder's
        # lock must expire by the time its row is due for reconciliation, or the trade stays
        # unsettled (and the coldkey blocked) for as long as the TTL.
        ttl_s = settings.chain_timeout_s + settings.stake_settle_after_s
        # Wait for the coldkey only as long as one try's time allows after its own account
        # read, signature and submit (the settings refuse a budget that leaves no wait):
        # a try that times out mid-submit would spend a delivery and cancel the submit.
        return cls(redis, ttl_s=ttl_s, wait_s=settings.stake_lane_wait_s)

    @contextlib.asynccontextmanager
    async def hold(self, coldkey: str) -> AsyncIterator[Lease]:
        """Queue in-process first (waiting here costs no delivery), then take the Redis
        lease, renewed until the block exits; both waits together last at most `wait_s`.

        Every refusal here is `Unavailable`: the worker waits it out in place, spending no
        delivery, so a long unsettled extrinsic cannot push the trades queued behind it
        into the dead letters. The lane itself opens only when no extrinsic of the coldkey
        is unsettled (checked before the lease, under it, and just before signing): a
        handler timeout releases the lease, never the lane."""
        give_up_at = time.monotonic() + self._wait_s
        local = self._local.setdefault(coldkey, asyncio.Lock())
        try:
            await asyncio.wait_for(local.acquire(), self._wait_s)
        except TimeoutError:
            raise Unavailable("another trade of this coldkey holds the lane here") from None
        try:
            lock = self._redis.lock(f"{KEY_COLDKEY_LOCK}{coldkey}", timeout=self._ttl_s)
            taken_at = await self._acquire(lock, give_up_at)
            lease = Lease(coldkey, lock, ttl_s=self._ttl_s, taken_at=taken_at)
            renewer = asyncio.create_task(self._renew(lease), name=f"lease:{coldkey[:8]}")
            try:
                yield lease
            finally:
                await cancel_and_wait([renewer], timeout_s=STOP_BOUND_S)
                try:
                    await lock.release()
                except (LockError, RedisError):
                    logger.warning("coldkey lease was no longer ours at release", coldkey=coldkey)
        finally:
            local.release()

    async def _acquire(self, lock: Lock, give_up_at: float) -> float:
        """Take the Redis lease by `give_up_at`; returns the monotonic time of the request
        that took it (the lease's TTL runs from no earlier than that)."""
        while True:
            requested_at = time.monotonic()
            try:
                if await lock.acquire(blocking=False):
                    return requested_at
            except (LockError, RedisError) as exc:
                raise Unavailable("coldkey lease unavailable") from exc
            if time.monotonic() + ACQUIRE_POLL_S > give_up_at:
                raise Unavailable("another process holds this coldkey's lease")
            await asyncio.sleep(ACQUIRE_POLL_S)

    async def _renew(self, lease: Lease) -> None:
        every = self._ttl_s / RENEWALS_PER_TTL
        while True:
            await asyncio.sleep(every)
            requested_at = time.monotonic()
            try:
                await lease.lock.reacquire()  # back to the full TTL, only if the token is ours
            except LockError:
                lease.lost.set()
                logger.error("coldkey lease lost while held", coldkey=lease.coldkey)
                return
            except RedisError as exc:
                # Perhaps still ours until the TTL runs out; `deadline` stops relying on it.
                logger.warning("coldkey lease renewal failed", error=str(exc))
                continue
            lease.renewed(requested_at)

    async def ensure_open(self, lease: Lease) -> None:
        """Raise `Unavailable` while one of the coldkey's extrinsics is unsettled, or when
        the lease is no longer certainly ours."""
        await ensure_no_unsettled(lease.coldkey)
        lease.ensure_held()
