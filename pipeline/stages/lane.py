"""The coldkey lane: one extrinsic at a time per coldkey, across processes.

Two guards, because a lock alone cannot be trusted with money:
- a Redis lease (token-owned lock) renewed every ttl/3 while held, so a slow submit
  never outlives it; a crashed holder's lease lapses after one TTL;
- the persisted `submitting` / `unknown` rows of the coldkey, checked under the lease
  before anything is signed: while one of its extrinsics is unsettled, the lane stays
  closed whatever happened to the lease (a handler timeout, a lapse, a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from pipeline.worker import Unavailable
from shared.constants import KEY_COLDKEY_LOCK
from shared.db.models import StakeAction
from shared.tasks import cancel_and_wait

UNSETTLED = ("submitting", "unknown")
RENEWALS_PER_TTL = 3
STOP_BOUND_S = 5.0


class Lease:
    """A held lane; `lost` is set when a renewal finds the lease no longer ours."""

    def __init__(self, coldkey: str, lock: Lock) -> None:
        self.coldkey = coldkey
        self.lock = lock
        self.lost = asyncio.Event()
        self.renewals = 0

    def ensure_held(self) -> None:
        if self.lost.is_set():
            raise Unavailable("coldkey lease lost before signing; nothing sent")


async def unsettled_extrinsic(coldkey: str) -> StakeAction | None:
    """The coldkey's oldest stake action whose extrinsic may still be pending."""
    return await StakeAction.filter(coldkey=coldkey, status__in=UNSETTLED).order_by("id").first()


class ColdkeyLane:
    def __init__(self, redis: Redis, *, ttl_s: float, wait_s: float) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._local: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, coldkey: str) -> AsyncIterator[Lease]:
        """Queue in-process first (waiting here costs no delivery), then take the Redis
        lease, renewed until the block exits.

        Every refusal here is `Unavailable`: the worker waits it out in place, spending no
        delivery, so a long unsettled extrinsic cannot push the trades queued behind it
        into the dead letters."""
        local = self._local.setdefault(coldkey, asyncio.Lock())
        async with local:
            lock = self._redis.lock(
                f"{KEY_COLDKEY_LOCK}{coldkey}",
                timeout=self._ttl_s,
                blocking_timeout=self._wait_s,
            )
            try:
                acquired = await lock.acquire()
            except (LockError, RedisError) as exc:
                raise Unavailable("coldkey lease unavailable") from exc
            if not acquired:
                raise Unavailable("another process holds this coldkey's lease")
            lease = Lease(coldkey, lock)
            renewer = asyncio.create_task(self._renew(lease), name=f"lease:{coldkey[:8]}")
            try:
                yield lease
            finally:
                await cancel_and_wait([renewer], timeout_s=STOP_BOUND_S)
                try:
                    await lock.release()
                except (LockError, RedisError):
                    logger.warning("coldkey lease was no longer ours at release", coldkey=coldkey)

    async def _renew(self, lease: Lease) -> None:
        every = self._ttl_s / RENEWALS_PER_TTL
        while True:
            await asyncio.sleep(every)
            try:
                await lease.lock.reacquire()  # back to the full TTL, only if the token is ours
            except LockError:
                lease.lost.set()
                logger.error("coldkey lease lost while held", coldkey=lease.coldkey)
                return
            except RedisError as exc:
                # Still ours until the TTL runs out; the next renewal tries again.
                logger.warning("coldkey lease renewal failed", error=str(exc))
                continue
            lease.renewals += 1

    async def ensure_open(self, lease: Lease) -> None:
        """Raise `Unavailable` while one of the coldkey's extrinsics is unsettled."""
        pending = await unsettled_extrinsic(lease.coldkey)
        if pending is not None:
            raise Unavailable(
                f"coldkey lane closed: trade {pending.trade_id} has an unsettled extrinsic "
                f"({pending.status})"
            )
        lease.ensure_held()
