"""API token cryptography: generation, hashing, constant-time comparison.

Tokens are 256-bit random strings, so a fast SHA-256 is the right hash (no
password-style stretching needed); only hashes are stored or kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "tsk_"  # noqa: S105 (a public prefix, not a secret)


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token_hash: str, candidates: list[str]) -> bool:
    """True when `token_hash` equals one of `candidates`, comparing each in constant time."""
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(token_hash, candidate)
    return found
