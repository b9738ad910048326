"""Bearer authentication: tokens from API_TOKENS plus hashed tokens stored in the database.

Valid DB tokens are remembered in-process for AUTH_CACHE_TTL_S so that the hot
path costs no round trip; a revoked token therefore stops working within that
TTL (10 s by default) in every process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from loguru import logger
from tortoise.exceptions import BaseORMException

from gateway.metrics import AUTH_FAILURES
from shared.db.models import ApiToken
from shared.errors import DatabaseUnavailable, Unauthorized
from shared.security import hash_token, matches
from shared.singleflight import SingleFlight

NEGATIVE_TTL_S = 2.0
MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    token_hash: str


class Authenticator:
    def __init__(self, static_tokens: list[str], *, cache_ttl_s: float) -> None:
        self._static = {hash_token(token): f"env-{i + 1}" for i, token in enumerate(static_tokens)}
        self._static_hashes = list(self._static)
        self._ttl = cache_ttl_s
        self._remembered: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._lookups: SingleFlight[str | None] = SingleFlight()

    async def authenticate(self, authorization: str | None) -> Caller:
        token = _bearer(authorization)
        token_hash = hash_token(token)
        if matches(token_hash, self._static_hashes):
            return Caller(self._static[token_hash], token_hash)
        name = await self._db_name(token_hash)
        if name is None:
            AUTH_FAILURES.labels("unknown_token").inc()
            raise Unauthorized("invalid or revoked token")
        return Caller(name, token_hash)

    def known(self, authorization: str | None) -> Caller | None:
        """The caller if its token is already known valid in this process, without any I/O."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            return None
        token_hash = hash_token(token)
        if matches(token_hash, self._static_hashes):
            return Caller(self._static[token_hash], token_hash)
        hit = self._remembered.get(token_hash)
        if hit is not None and hit[1] is not None and hit[0] > time.monotonic():
            return Caller(hit[1], token_hash)
        return None

    def forget(self) -> None:
        self._remembered.clear()

    async def _db_name(self, token_hash: str) -> str | None:
        now = time.monotonic()
        hit = self._remembered.get(token_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        name = await self._lookups.do(token_hash, lambda: self._lookup(token_hash))
        ttl = self._ttl if name is not None else min(self._ttl, NEGATIVE_TTL_S)
        self._remembered[token_hash] = (now + ttl, name)
        self._remembered.move_to_end(token_hash)
        while len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)
        return name

    async def _lookup(self, token_hash: str) -> str | None:
        try:
            row = await ApiToken.get_or_none(token_hash=token_hash, revoked_at=None)
        except (BaseORMException, OSError) as exc:
            logger.warning("token lookup failed", error=type(exc).__name__)
            raise DatabaseUnavailable("token store unavailable") from exc
        if row is None or not matches(token_hash, [row.token_hash]):
            return None
        return row.name


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
