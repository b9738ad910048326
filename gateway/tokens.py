"""Managing stored API tokens (create, list, revoke); used by `python -m gateway tokens`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError

from gateway.scopes import ALL_SCOPES, STORED_DEFAULT, ScopeError, format_scopes, parse_scopes
from shared.db.models import ApiToken
from shared.ids import utcnow
from shared.security import generate_token, hash_token


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    prefix: str
    scopes: str
    created_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, object]:
        """The stable shape of `tokens list --json` (JSON_KEYS, documented in its --help)."""
        return {
            "name": self.name,
            "prefix": self.prefix,
            "scopes": [s for s in self.scopes.split(",") if s],
            "active": self.revoked_at is None,
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


# One object per token, in creation order; never the token or its hash.
JSON_KEYS = {
    "name": "the token's name (owner of the trades it requests)",
    "prefix": "the token's first 8 characters",
    "scopes": "list of granted scopes",
    "active": "false once revoked",
    "created_at": "ISO 8601 time",
    "revoked_at": "ISO 8601 time, or null",
}


def scopes_arg(text: str | None) -> frozenset[str]:
    """The scopes of `--scopes read,trade` (default `read`), or a TokenError naming the bad one."""
    try:
        return STORED_DEFAULT if text is None else parse_scopes(text)
    except ScopeError as exc:
        raise TokenError(f"--scopes: {exc}") from None


async def create_token(name: str, scopes: frozenset[str] = STORED_DEFAULT) -> str:
    """Store a new token's hash under `name` and return the token (shown once).

    The name becomes the owner of the trades the token requests, so it may not look like
    a static token's `static:` owner.
    """
    if not name or len(name) > 64:
        raise TokenError("token name must be 1..64 characters")
    if ":" in name:
        raise TokenError("token name may not contain ':' (reserved for API_TOKENS owners)")
    if not scopes or not scopes <= set(ALL_SCOPES):
        raise TokenError(f"scopes must be a non-empty subset of {', '.join(ALL_SCOPES)}")
    token = generate_token()
    try:
        await ApiToken.create(
            name=name,
            token_hash=hash_token(token),
            prefix=token[:8],
            scopes=format_scopes(scopes),
        )
    except IntegrityError as exc:
        raise TokenError(f"a token named {name!r} already exists") from exc
    return token


async def list_tokens() -> list[TokenInfo]:
    rows = await ApiToken.all().order_by("created_at")
    return [TokenInfo(r.name, r.prefix, r.scopes, r.created_at, r.revoked_at) for r in rows]


async def revoke_token(name: str) -> None:
    updated = await ApiToken.filter(name=name, revoked_at=None).update(revoked_at=utcnow())
    if not updated:
        raise TokenError(f"no active token named {name!r}")
