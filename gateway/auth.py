"""Bearer authentication: tokens from API_TOKENS plus hashed tokens stored in the database.

Valid DB tokens are remembered in-process (with their scopes) for AUTH_CACHE_TTL_S
so that the hot path costs no round trip; a revoked token therefore stops working
within that TTL (10 s by default) in every process.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from loguru import logger
from tortoise.exceptions import BaseORMException

from gateway.metrics import AUTH_FAILURES
from gateway.scopes import Caller, ScopeError, parse_scopes, static_owner
from shared.db.models import ApiToken
from shared.db.schema import database_error
from shared.errors import Unauthorized
from shared.security import hash_token, matches
from shared.singleflight import SingleFlight

NEGATIVE_TTL_S = 2.0
MAX_REMEMBERED = 10_000

# A remembered lookup: (expiry, owner or None for a bad token, scopes).
Remembered = tuple[float, str | None, frozenset[str]]


class Authenticator:
    def __init__(
        self, static_tokens: list[tuple[str, frozenset[str]]], *, cache_ttl_s: float
    ) -> None:
        """`static_tokens` as parsed by `gateway.scopes.parse_static_tokens` at start-up."""
        self._static = {
            hash_token(token): Caller(static_owner(token), scopes, hash_token(token))
            for token, scopes in static_tokens
        }
        self._static_hashes = list(self._static)
        self._ttl = cache_ttl_s
        self._remembered: OrderedDict[str, Remembered] = OrderedDict()
        self._lookups: SingleFlight[tuple[str, frozenset[str]] | None] = SingleFlight()

    async def authenticate(self, authorization: str | None) -> Caller:
        token = _bearer(authorization)
        token_hash = hash_token(token)
        if matches(token_hash, self._static_hashes):
            return self._static[token_hash]
        name, scopes = await self._db_token(token_hash)
        if name is None:
            AUTH_FAILURES.labels("unknown_token").inc()
            raise Unauthorized("invalid or revoked token")
        return Caller(name, scopes, token_hash)

    def known(self, authorization: str | None) -> Caller | None:
        """The caller if its token is already known valid in this process, without any I/O."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            return None
        token_hash = hash_token(token)
        if matches(token_hash, self._static_hashes):
            return self._static[token_hash]
        hit = self._remembered.get(token_hash)
        if hit is not None and hit[1] is not None and hit[0] > time.monotonic():
            return Caller(hit[1], hit[2], token_hash)
        return None

    def forget(self) -> None:
        self._remembered.clear()

    async def _db_token(self, token_hash: str) -> tuple[str | None, frozenset[str]]:
        now = time.monotonic()
        hit = self._remembered.get(token_hash)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        found = await self._lookups.do(token_hash, lambda: self._lookup(token_hash))
        name, scopes = found if found is not None else (None, frozenset[str]())
        ttl = self._ttl if name is not None else min(self._ttl, NEGATIVE_TTL_S)
        self._remembered[token_hash] = (now + ttl, name, scopes)
        self._remembered.move_to_end(token_hash)
        while len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)
        return name, scopes

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
