"""HMAC signatures on stream entries, so that only holders of EVENT_SIGNING_KEY can make a
stage act: anything else that can write to Redis gets its entries dead-lettered.

The signature covers every field of the entry except `sig` itself, sorted by name and
encoded as a JSON array of [name, value] pairs; JSON string escaping makes that encoding
unambiguous (no choice of names and values can collide with another).

The key is process-wide: it is configured once at start-up by every process that
publishes or consumes (gateway, pipeline, beat, operator commands), and every publisher
and every stage reads it from here, so none can forget to sign or to verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

import orjson

from shared.settings import Settings

SIG_FIELD: Final = "sig"
MIN_KEY_CHARS: Final = 16
KEY_HELP: Final = (
    "EVENT_SIGNING_KEY is not set. Every process that publishes or consumes stream events "
    "(gateway, pipeline, beat) needs the same secret key: generate one with "
    "`python -c 'import secrets; print(secrets.token_hex(32))'` and set EVENT_SIGNING_KEY "
    "in .env or the environment (`make run` creates ./data/event_signing_key for you; "
    "docker compose reads it from .env)."
)


class SigningKeyMissing(RuntimeError):
    """No usable key: the process must not start."""


class SignatureError(ValueError):
    """An entry that no holder of the key wrote (the reason is safe to log)."""


class _Key:
    """Holds the key bytes; its repr never shows them."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<EVENT_SIGNING_KEY>"


_key: _Key | None = None


def key_from_settings(settings: Settings) -> bytes:
    """The configured key; SigningKeyMissing (with how to set it) when it is unset or weak."""
    secret = settings.event_signing_key
    raw = secret.get_secret_value().strip() if secret is not None else ""
    if not raw:
        raise SigningKeyMissing(KEY_HELP)
    if len(raw) < MIN_KEY_CHARS:
        raise SigningKeyMissing(
            f"EVENT_SIGNING_KEY is too short (at least {MIN_KEY_CHARS} characters; "
            "use `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return raw.encode()


def configure_signing(settings: Settings) -> None:
    """Install the process's key; raises SigningKeyMissing (and changes nothing) without one."""
    set_signing_key(key_from_settings(settings))


def set_signing_key(key: str | bytes) -> None:
    global _key
    _key = _Key(key.encode() if isinstance(key, str) else key)


def _current(key: bytes | None) -> bytes:
    if key is not None:
        return key
    if _key is None:
        raise SigningKeyMissing(KEY_HELP)
    return _key.value


def canonical(fields: Mapping[str, str]) -> bytes:
    """The signed bytes: every field but `sig`, sorted by name, as JSON [name, value] pairs."""
    return orjson.dumps(sorted((k, v) for k, v in fields.items() if k != SIG_FIELD))


def signature(fields: Mapping[str, str], *, key: bytes | None = None) -> str:
    return hmac.new(_current(key), canonical(fields), hashlib.sha256).hexdigest()


def sign(fields: Mapping[str, str], *, key: bytes | None = None) -> dict[str, str]:
    """A copy of `fields` with a fresh `sig` (any old one replaced)."""
    out = {k: v for k, v in fields.items() if k != SIG_FIELD}
    out[SIG_FIELD] = signature(out, key=key)
    return out


def verify(fields: Mapping[str, str], *, key: bytes | None = None) -> None:
    """Raise SignatureError("unsigned event" | "bad signature") unless `fields` carry a
    valid `sig` under the key."""
    given = fields.get(SIG_FIELD)
    if not given:
        raise SignatureError("unsigned event")
    if not hmac.compare_digest(given.encode(), signature(fields, key=key).encode()):
        raise SignatureError("bad signature")


def is_signed(fields: Mapping[str, str], *, key: bytes | None = None) -> bool:
    try:
        verify(fields, key=key)
    except SignatureError:
        return False
    return True
