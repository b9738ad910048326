"""shared/settings.py: settings refused or normalized at start-up, and what counts as secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings, url_secrets
from shared.ss58 import decode_ss58, encode_ss58
from tests.fakes.chain import DEFAULT_HOTKEY


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_default_hotkey_is_normalized_to_format_42() -> None:
    polkadot = encode_ss58(decode_ss58(DEFAULT_HOTKEY), 0)
    assert polkadot != DEFAULT_HOTKEY
    assert _settings(default_hotkey=f" {polkadot} ").default_hotkey == DEFAULT_HOTKEY


@pytest.mark.parametrize("bad", ["not-a-hotkey", DEFAULT_HOTKEY[:-1] + "X", ""])
def test_a_default_hotkey_that_is_no_address_stops_start_up(bad: str) -> None:
    with pytest.raises(ValidationError, match=r"DEFAULT_HOTKEY: .* is not an SS58 address"):
        _settings(default_hotkey=bad)


@pytest.mark.parametrize(
    ("url", "query", "secrets"),
    [
        ("redis://:pw-123456@redis:6379/0", False, ["pw-123456"]),
        ("postgres://app:db-pass-1@db/app?sslmode=require", False, ["db-pass-1"]),
        (
            "wss://user:node-pass@node/ws?apikey=KEY123456&x=1",
            True,
            ["node-pass", "KEY123456", "1"],
        ),
        # As written and decoded: a library may print the URL either way.
        ("redis://:p%40ss-word@redis/0", False, ["p%40ss-word", "p@ss-word"]),
        ("wss://node/ws?k=ab%2Bcd+ef", True, ["ab%2Bcd+ef", "ab+cd+ef", "ab+cd ef"]),
        ("wss://node/ws?apikey=KEY123456", False, []),
        ("test", True, []),
        ("redis://[::1", False, []),  # not a URL at all: nothing to mask, no crash
    ],
)
def test_url_secrets(url: str, query: bool, secrets: list[str]) -> None:
    assert url_secrets(url, query=query) == secrets


def test_service_url_credentials_are_secret_values() -> None:
    settings = _settings(
        redis_url="redis://:redis-pass-1@redis:6379/0",
        database_url="postgres://app:db-pass-22@db/app?sslmode=require",
        bittensor_network="wss://node.example/ws?apikey=provider-key-3",
    )
    values = settings.secret_values()
    assert {"redis-pass-1", "db-pass-22", "provider-key-3"} <= set(values)
    assert "require" not in values  # a database option is no secret
