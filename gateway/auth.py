"""Bearer authentication: tokens from API_TOKENS plus hashed tokens stored in the database.

Valid DB tokens are remembered in-process (with their scopes) for AUTH_CACHE_TTL_S
so that the hot path costs no round trip; a revoked token therefore stops working
within that TTL (10 s by default) in every process.

A token known valid without I/O (a static one, or a stored one remembered valid) always
passes, on the fast path and in the router alike. Only a token that would cost a database
lookup meets the failed-auth throttle (per client address) and the global bound on lookups
in flight, and only its failures are counted against the address. A stored token this
process has found valid in the last PROVEN_TTL_S is looked up again once its memory expires
(a revocation still counts) but is never throttled: clients behind one address (a proxy)
cannot lock each other's valid tokens out by failing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from loguru import logger
from tortoise.exceptions import BaseORMException

from gateway.limits import FailedAuthThrottle
from gateway.metrics import AUTH_FAILURES
from gateway.scopes import Caller, ScopeError, parse_scopes, static_owner
from shared.db.models import ApiToken
from shared.db.schema import database_error
from shared.errors import RateLimited, Unauthorized
from shared.security import hash_token, matches
from shared.singleflight import SingleFlight

NEGATIVE_TTL_S = 2.0
PROVEN_TTL_S = 24 * 3600.0
MAX_REMEMBERED = 10_000
DEFAULT_MAX_LOOKUPS = 16

# A remembered lookup: (expiry, owner or None for a bad token, scopes).
Remembered = tuple[float, str | None, frozenset[str]]


class AuthBusy(RateLimited):
    """Every stored-token lookup slot is taken: answered at once with Retry-After.

    A load shed, not the caller's fault (the bound is global), hence its own code (the
    gateway answers 503 rather than 429); it is a `RateLimited` so that the answer carries
    Retry-After like the other limits.
    """

    code = "auth_busy"


class Authenticator:
    def __init__(
        self,
        static_tokens: list[tuple[str, frozenset[str]]],
        *,
        cache_ttl_s: float,
        throttle: FailedAuthThrottle | None = None,
        max_lookups: int = DEFAULT_MAX_LOOKUPS,
    ) -> None:
        """`static_tokens` as parsed by `gateway.scopes.parse_static_tokens` at start-up.

        Each static token's owner label (a slow KDF) is computed here, once."""
        self._static = {
            hash_token(token): Caller(static_owner(token), scopes)
            for token, scopes in static_tokens
        }
        self._static_hashes = list(self._static)
        self._ttl = cache_ttl_s
        self._remembered: OrderedDict[str, Remembered] = OrderedDict()
        # Stored tokens found valid, and until when that spares them the throttle.
        self._proven: OrderedDict[str, float] = OrderedDict()
        self._lookups: SingleFlight[tuple[str, frozenset[str]] | None] = SingleFlight()
        self._throttle = throttle
        self._max_lookups = max_lookups
        self._active_lookups = 0

    async def authenticate(self, authorization: str | None, *, client: str = "unknown") -> Caller:
        """The caller, or Unauthorized (401), RateLimited (429: too many failed checks from
        `client`, a `gateway.limits.client_key`) or AuthBusy (503)."""
        token = _bearer(authorization)
        token_hash = hash_token(token)
        caller = self._known(token_hash)
        if caller is not None:
            return caller
        hit = self._remembered.get(token_hash)
        if hit is not None and hit[0] > time.monotonic():
            # Remembered bad (a remembered good one was answered by `_known`): no lookup.
            self._failed(client)
            raise Unauthorized("invalid or revoked token")
        if self._throttle is not None and not self._was_proven(token_hash):
            wait_s = self._throttle.retry_after(client)
            if wait_s > 0:
                # Before the lookup: a guesser costs no database round trip.
                AUTH_FAILURES.labels("throttled").inc()
                raise RateLimited(
                    "too many failed authentications from this address; try again later",
                    retry_after_s=max(1, math.ceil(wait_s)),
                )
        name, scopes = await self._db_token(token_hash)
        if name is None:
            self._failed(client)
            raise Unauthorized("invalid or revoked token")
        return Caller(name, scopes)

    def _known(self, token_hash: str) -> Caller | None:
        if matches(token_hash, self._static_hashes):
            return self._static[token_hash]
        hit = self._remembered.get(token_hash)
        if hit is not None and hit[1] is not None and hit[0] > time.monotonic():
            return Caller(hit[1], hit[2])
        return None

    def _was_proven(self, token_hash: str) -> bool:
        until = self._proven.get(token_hash)
        return until is not None and until > time.monotonic()

    def forget(self) -> None:
        self._remembered.clear()
        self._proven.clear()

    def _failed(self, client: str) -> None:
        AUTH_FAILURES.labels("unknown_token").inc()
        if self._throttle is not None:
            self._throttle.failed(client)

    async def _db_token(self, token_hash: str) -> tuple[str | None, frozenset[str]]:
        found = await self._lookups.do(token_hash, lambda: self._bounded_lookup(token_hash))
        name, scopes = found if found is not None else (None, frozenset[str]())
        ttl = self._ttl if name is not None else min(self._ttl, NEGATIVE_TTL_S)
        now = time.monotonic()
        self._remembered[token_hash] = (now + ttl, name, scopes)
        self._remembered.move_to_end(token_hash)
        while len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)
        if name is None:
            self._proven.pop(token_hash, None)  # revoked: throttled like any other from now
        else:
            self._proven[token_hash] = now + PROVEN_TTL_S
            self._proven.move_to_end(token_hash)
            while len(self._proven) > MAX_REMEMBERED:
                self._proven.popitem(last=False)
        return name, scopes

    async def _bounded_lookup(self, token_hash: str) -> tuple[str, frozenset[str]] | None:
        # The check and the increment run in one step of the lookup's task: no await between.
        if self._active_lookups >= self._max_lookups:
            AUTH_FAILURES.labels("busy").inc()
            raise AuthBusy("too many token checks in progress; try again shortly", retry_after_s=1)
        self._active_lookups += 1
        try:
            return await self._lookup(token_hash)
        finally:
            self._active_lookups -= 1

    async def _lookup(self, token_hash: str) -> tuple[str, frozenset[str]] | None:
        try:
            row = await ApiToken.get_or_none(token_hash=token_hash, revoked_at=None)
        except (BaseORMException, OSError) as exc:
            logger.warning("token lookup failed", error=type(exc).__name__)
            raise database_error(exc) from exc
        if row is None or not matches(token_hash, [row.token_hash]):
            return None
        try:
            scopes = parse_scopes(row.scopes)
        except ScopeError:
            # A hand-edited row: grant nothing rather than guess.
            logger.warning("stored token has unusable scopes", token=row.name)
            scopes = frozenset()
        return row.name, scopes


def _bearer(authorization: str | None) -> str:
    if not authorization:
        AUTH_FAILURES.labels("missing").inc()
        raise Unauthorized("missing Authorization header (expected: Bearer <token>)")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        AUTH_FAILURES.labels("malformed").inc()
        raise Unauthorized("malformed Authorization header (expected: Bearer <token>)")
    return token
