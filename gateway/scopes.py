"""Token scopes and the rules that use them, in one place for the router and the fast path.

`read` answers dividends and the caller's own trades, `trade` may enqueue trades,
`admin` sees every caller's trades. Scopes are independent: a route asks for
exactly the scopes it lists, nothing implies another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from shared.errors import AppError

READ = "read"
TRADE = "trade"
ADMIN = "admin"
ALL_SCOPES = (READ, TRADE, ADMIN)  # canonical order, used when scopes are written out
STATIC_DEFAULT = frozenset({READ, TRADE})
STORED_DEFAULT = frozenset({READ})
STATIC_OWNER_PREFIX = "static:"
# The owner label of an API_TOKENS entry is published (events, rows, admin answers), so it
# is derived with a deliberately slow, memory-hard KDF: testing one guess of a token against
# a label costs ~70 ms and 32 MiB here, instead of one SHA-256. A fixed salt (this
# deployment-independent domain string) keeps the label stable across restarts and processes
# without any key to manage; it is computed once per token at start-up.
_OWNER_KDF_SALT = b"taostake/static-token-owner/v1"
_OWNER_KDF = {"n": 2**15, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 16}


class InsufficientScope(AppError):
    code = "insufficient_scope"


class ScopeError(ValueError):
    """A scope list or an API_TOKENS entry that cannot be used; the message names the culprit."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: `owner` is stable and never secret (it is stored as `requested_by`);
    it is also the subject of the caller's rate limits (a stored token's unique name, or a
    static token's label), so no function of the token itself reaches Redis keys."""

    owner: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise InsufficientScope(f"this token lacks the {scope!r} scope")


def parse_scopes(text: str, *, sep: str = ",") -> frozenset[str]:
    """The set of scopes in `text`; an empty or unknown name is an error, never ignored."""
    names = [part.strip().lower() for part in text.split(sep)]
    known = f"(known: {', '.join(ALL_SCOPES)})"
    if not any(names):
        raise ScopeError(f"no scope given {known}")
    if "" in names:
        raise ScopeError(f"empty scope name {known}")
    unknown = [name for name in names if name not in ALL_SCOPES]
    if unknown:
        raise ScopeError(f"unknown scope {unknown[0]!r} {known}")
    return frozenset(names)


MIN_STATIC_TOKEN_CHARS = 16  # a shorter API_TOKENS entry is guessable


def format_scopes(scopes: frozenset[str]) -> str:
    return ",".join(scope for scope in ALL_SCOPES if scope in scopes)


@lru_cache(maxsize=256)
def static_owner(token: str) -> str:
    """A label for an API_TOKENS entry that survives reordering and reveals nothing usable
    (scrypt with a fixed domain salt; slow on purpose, so callers compute it once)."""
    digest = hashlib.scrypt(token.encode(), salt=_OWNER_KDF_SALT, **_OWNER_KDF)
    return STATIC_OWNER_PREFIX + digest.hex()[:12]


def parse_static_tokens(entries: list[str]) -> list[tuple[str, frozenset[str]]]:
    """(token, scopes) of each `TOKEN` or `TOKEN:scope+scope` entry of API_TOKENS.

    Raised messages name the entry by position and owner label, never by the token.
    """
    parsed = []
    positions: dict[str, int] = {}
    for position, entry in enumerate(entries, start=1):
        token, colon, spec = entry.partition(":")
        token = token.strip()
        where = f"API_TOKENS entry {position}"
        if not token:
            raise ScopeError(f"{where}: empty token before ':'")
        if all(part.strip().lower() in ALL_SCOPES for part in token.split("+")):
            # `TOKEN:read,trade` split on its comma, or the scopes written without the token:
            # scope names would become a (public, guessable) token.
            raise ScopeError(
                f"{where} is the scope list {token!r}, not a token; write TOKEN:scope+scope "
                "(scopes joined with '+')"
            )
        if len(token) < MIN_STATIC_TOKEN_CHARS:
            raise ScopeError(
                f"{where} ({static_owner(token)}) is shorter than {MIN_STATIC_TOKEN_CHARS} "
                "characters: use a long random token, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        try:
            scopes = parse_scopes(spec, sep="+") if colon else STATIC_DEFAULT
        except ScopeError as exc:
            raise ScopeError(
                f"{where} ({static_owner(token)}): {exc}; write TOKEN or TOKEN:scope+scope"
            ) from None
        if token in positions:
            raise ScopeError(
                f"{where} repeats the token of entry {positions[token]} "
                f"({static_owner(token)}): give each token once, with all its scopes"
            )
        positions[token] = position
        parsed.append((token, scopes))
    return parsed


def trade_wanted(caller: Caller, trade: bool | None, *, trade_by_default: bool) -> bool:
    """Whether this request trades: an explicit `trade=true` needs the `trade` scope (403
    otherwise); an omitted `trade` follows TRADE_BY_DEFAULT only for trade-scoped tokens."""
    if trade is None:
        return trade_by_default and TRADE in caller.scopes
    if trade:
        caller.require(TRADE)
    return trade
