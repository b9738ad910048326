"""Scope parsing (CLI lists and API_TOKENS entries) and the trade rule shared by both paths."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from gateway import scopes
from gateway.app import create_app
from gateway.errors import status_for
from gateway.scopes import (
    Caller,
    InsufficientScope,
    ScopeError,
    format_scopes,
    parse_scopes,
    parse_static_tokens,
    static_owner,
    trade_wanted,
)
from tests.conftest import make_settings


class TestParseScopes:
    def test_names_are_validated_and_written_in_canonical_order(self) -> None:
        assert parse_scopes("trade, READ") == frozenset({"read", "trade"})
        assert format_scopes(parse_scopes("admin,trade,read")) == "read,trade,admin"

    @pytest.mark.parametrize("text", ["", "read,", "read,trdae", "write"])
    def test_an_empty_or_unknown_name_is_refused(self, text: str) -> None:
        with pytest.raises(ScopeError, match="known: read, trade, admin"):
            parse_scopes(text)


class TestStaticTokens:
    def test_plain_entries_keep_read_and_trade_and_scoped_entries_get_theirs(self) -> None:
        parsed = parse_static_tokens(
            [
                "plain-token-0123456789",
                "ro-token-0123456789:read",
                "all-token-0123456789:read+trade+admin",
            ]
        )
        assert parsed == [
            ("plain-token-0123456789", frozenset({"read", "trade"})),
            ("ro-token-0123456789", frozenset({"read"})),
            ("all-token-0123456789", frozenset({"read", "trade", "admin"})),
        ]

    @pytest.mark.parametrize(
        ("entry", "problem"),
        [
            ("secret-token-xyz:read+trdae", "unknown scope 'trdae'"),
            ("secret-token-xyz:", "no scope given"),
            ("secret-token-xyz:read+", "empty scope name"),
        ],
    )
    def test_a_bad_entry_is_named_by_position_and_label_never_by_token(
        self, entry: str, problem: str
    ) -> None:
        with pytest.raises(ScopeError) as caught:
            parse_static_tokens(["good-token-0123456789", entry])
        message = str(caught.value)
        assert message.startswith("API_TOKENS entry 2 (static:") and problem in message
        assert static_owner("secret-token-xyz") in message
        assert "secret-token-xyz" not in message.replace(static_owner("secret-token-xyz"), "")

    def test_an_empty_token_is_refused(self) -> None:
        with pytest.raises(ScopeError, match="API_TOKENS entry 1: empty token"):
            parse_static_tokens([":read"])

    def test_scopes_joined_with_a_comma_do_not_turn_a_scope_into_a_token(self) -> None:
        with pytest.raises(ScopeError, match="entry 2 is the scope list 'trade', not a token"):
            parse_static_tokens(["some-token-0123456789:read", "trade"])

    @pytest.mark.parametrize(
        "entry", ["read+trade+admin", "admin+read+trade", "READ+Trade+admin:read", "read+read+read"]
    )
    def test_a_scope_list_long_enough_to_pass_the_length_check_is_no_token(
        self, entry: str
    ) -> None:
        """`read+trade+admin` is 16 characters: written without its token it used to become a
        public, guessable token with every scope."""
        with pytest.raises(ScopeError, match=r"entry 1 is the scope list .*, not a token"):
            parse_static_tokens([entry])

    def test_a_token_given_twice_is_refused(self) -> None:
        with pytest.raises(ScopeError, match="entry 3 repeats the token of entry 1") as caught:
            parse_static_tokens(
                ["twice-token-0123456789:read", "other-token-0123456789", "twice-token-0123456789"]
            )
        assert "twice-token-0123456789" not in str(caught.value)

    def test_the_app_does_not_start_with_a_bad_entry(self, redis_url: str) -> None:
        settings = make_settings(
            redis_url, "postgres://unused", api_tokens=SecretStr("secret-token-xyz:reed")
        )
        with pytest.raises(ScopeError, match=r"entry 1 .*unknown scope 'reed'") as caught:
            create_app(settings)
        assert "secret-token-xyz" not in str(caught.value)

    def test_owner_label_is_stable_and_not_the_token(self) -> None:
        label = static_owner("secret-token-xyz")
        assert label == static_owner("secret-token-xyz") and label.startswith("static:")
        assert "secret" not in label and len(label) == len("static:") + 12

    def test_owner_label_is_a_slow_kdf_not_a_plain_hash(self) -> None:
        """The label is published (events, rows, admin answers): with an unsalted SHA-256 prefix
        a weak static token could be brute-forced offline at billions of guesses a second."""
        token = "weak-token-0000000001"
        label = static_owner(token).removeprefix("static:")
        assert label != hashlib.sha256(token.encode()).hexdigest()[:12]
        assert scopes._OWNER_KDF["n"] >= 2**14 and scopes._OWNER_KDF["r"] >= 8
        expected = hashlib.scrypt(token.encode(), salt=scopes._OWNER_KDF_SALT, **scopes._OWNER_KDF)
        assert label == expected.hex()[:12]

    def test_the_bare_token_of_a_scoped_entry_is_masked_in_logs(self, redis_url: str) -> None:
        settings = make_settings(
            redis_url, "postgres://unused", api_tokens=SecretStr("secret-token-xyz:read")
        )
        assert "secret-token-xyz" in settings.secret_values()


class TestTradeWanted:
    reader = Caller("r", frozenset({"read"}))
    trader = Caller("t", frozenset({"read", "trade"}))

    def test_explicit_trade_needs_the_trade_scope(self) -> None:
        with pytest.raises(InsufficientScope) as caught:
            trade_wanted(self.reader, True, trade_by_default=True)
        assert caught.value.code == "insufficient_scope" and status_for(caught.value) == 403
        assert trade_wanted(self.trader, True, trade_by_default=False) is True

    def test_trade_by_default_applies_only_to_trade_scoped_tokens(self) -> None:
        assert trade_wanted(self.reader, None, trade_by_default=True) is False
        assert trade_wanted(self.trader, None, trade_by_default=True) is True
        assert trade_wanted(self.trader, None, trade_by_default=False) is False
        assert trade_wanted(self.reader, False, trade_by_default=True) is False
