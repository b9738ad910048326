"""SS58 address validation with the checksum check, without importing the SDK."""

from __future__ import annotations

import hashlib

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_PREFIX = b"SS58PRE"


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + _INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + body


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = _ALPHABET[rem] + out
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + out


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(_PREFIX + payload, digest_size=64).digest()[:2]


def decode_ss58(address: str) -> bytes:
    """The 32-byte account id of `address`; ValueError if it is not valid SS58."""
    if not 40 <= len(address) <= 50 or any(c not in _INDEX for c in address):
        raise ValueError("not a base58 SS58 address")
    raw = _b58decode(address)
    prefix_len = 1 if raw and raw[0] < 64 else 2
    if len(raw) != prefix_len + 32 + 2:
        raise ValueError("wrong length for an SS58 account address")
    payload, checksum = raw[:-2], raw[-2:]
    if _checksum(payload) != checksum:
        raise ValueError("SS58 checksum mismatch")
    return payload[prefix_len:]


def is_valid_ss58(address: str) -> bool:
    try:
        decode_ss58(address)
    except ValueError:
        return False
    return True


def encode_ss58(account_id: bytes, ss58_format: int = 42) -> str:
    """Encode a 32-byte account id (used by tests and the simulated node's seed data)."""
    if len(account_id) != 32 or not 0 <= ss58_format < 64:
        raise ValueError("expected a 32-byte account id and a one-byte SS58 format")
    payload = bytes([ss58_format]) + account_id
    return _b58encode(payload + _checksum(payload))


def normalize_ss58(address: str) -> str:
    """The address in the generic format 42 used by Bittensor.

    One account has many valid SS58 spellings (one per network prefix); keys built from
    addresses (cache, trade cooldown) must use one of them. ValueError if invalid.
    """
    return encode_ss58(decode_ss58(address), 42)
