"""Managing stored API tokens (create, list, revoke); used by `python -m gateway tokens`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError

from shared.db.models import ApiToken
from shared.ids import utcnow
from shared.security import generate_token, hash_token


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


async def create_token(name: str) -> str:
    """Store a new token's hash under `name` and return the token (shown once)."""
    if not name or len(name) > 64:
        raise TokenError("token name must be 1..64 characters")
    token = generate_token()
    try:
        await ApiToken.create(name=name, token_hash=hash_token(token), prefix=token[:8])
    except IntegrityError as exc:
        raise TokenError(f"a token named {name!r} already exists") from exc
    return token


async def list_tokens() -> list[TokenInfo]:
    rows = await ApiToken.all().order_by("created_at")
    return [TokenInfo(r.name, r.prefix, r.created_at, r.revoked_at) for r in rows]


async def revoke_token(name: str) -> None:
    updated = await ApiToken.filter(name=name, revoked_at=None).update(revoked_at=utcnow())
    if not updated:
        raise TokenError(f"no active token named {name!r}")
