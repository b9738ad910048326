from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from shared import signing
from shared.bus import publish
from shared.events import DividendRequested, SentimentScored
from shared.settings import Settings
from tests.conftest import TEST_SIGNING_KEY
from tests.fakes.chain import ALICE


def _scored(**overrides: object) -> SentimentScored:
    values: dict[str, object] = {
        "trade_id": "t1",
        "netuid": 7,
        "hotkey": ALICE,
        "source": "api",
        "score": 40,
        "backend": "llm",
    }
    values.update(overrides)
    return SentimentScored.model_validate(values)


async def test_round_trip_through_a_stream(redis: Redis) -> None:
    event = DividendRequested(trade_id="t1", netuid=0, hotkey=ALICE, source="schedule")
    entry_id = await publish(redis, event, maxlen=1000)
    [(got_id, fields)] = await redis.xrange("stream:dividend_requested")
    assert got_id.decode() == entry_id
    assert fields[b"netuid"] == b"0" and fields[b"source"] == b"schedule"
    assert b"request_id" not in fields  # unset optional fields are left out
    back = DividendRequested.from_fields(fields)
    assert back == event
    decoded = {k.decode(): v.decode() for k, v in fields.items()}
    signing.verify(decoded)  # what went through Redis still verifies


def test_dividend_requested_carries_only_what_its_consumers_read() -> None:
    fields = DividendRequested(
        trade_id="t1", netuid=3, hotkey=ALICE, source="api", request_id="r", requested_by="o"
    ).to_fields()
    assert set(fields) == {
        "type",
        "event_id",
        "version",
        "trade_id",
        "occurred_at",
        "netuid",
        "hotkey",
        "source",
        "request_id",
        "requested_by",
        "sig",
    }


def test_an_old_entry_with_dropped_fields_still_verifies_and_parses() -> None:
    """Entries written before `dividend`, `unit` and `block` left `DividendRequested`."""
    current = DividendRequested(trade_id="t1", netuid=3, hotkey=ALICE, source="api").to_fields()
    unsigned = {k: v for k, v in current.items() if k != "sig"}
    old = signing.sign({**unsigned, "dividend": "42", "unit": "tao_rao", "block": "1000"})
    signing.verify(old)
    assert DividendRequested.from_fields(old) == DividendRequested.from_fields(current)


class TestSignature:
    def test_every_entry_is_signed_over_all_its_fields(self) -> None:
        fields = _scored().to_fields()
        expected = signing.signature(fields, key=TEST_SIGNING_KEY.encode())
        assert fields["sig"] == expected and len(expected) == 64
        signing.verify(fields)
        for name in ("score", "hotkey", "netuid", "type", "trade_id", "occurred_at"):
            tampered = dict(fields, **{name: fields[name] + "0"})
            with pytest.raises(signing.SignatureError, match="bad signature"):
                signing.verify(tampered)

    def test_unsigned_and_wrong_key(self) -> None:
        fields = _scored().to_fields()
        unsigned = {k: v for k, v in fields.items() if k != "sig"}
        with pytest.raises(signing.SignatureError, match="unsigned event"):
            signing.verify(unsigned)
        forged = signing.sign(unsigned, key=b"some-other-key-0123456789")
        with pytest.raises(signing.SignatureError, match="bad signature"):
            signing.verify(forged)

    def test_encoding_is_unambiguous(self) -> None:
        """Moving text between a name and a value must change the signed bytes."""
        a = signing.canonical({"ab": "c", "x": "1"})
        b = signing.canonical({"a": "bc", "x": "1"})
        c = signing.canonical({"x": "1", "ab": "c", "sig": "ignored"})
        assert a != b and a == c

    def test_an_added_field_breaks_the_signature(self) -> None:
        fields = dict(_scored().to_fields(), amount_tao="100")
        with pytest.raises(signing.SignatureError, match="bad signature"):
            signing.verify(fields)

    def test_key_is_required_and_never_shown(self) -> None:
        with pytest.raises(signing.SigningKeyMissing, match="EVENT_SIGNING_KEY is not set"):
            signing.configure_signing(Settings(_env_file=None))  # type: ignore[call-arg]
        with pytest.raises(signing.SigningKeyMissing, match="too short"):
            signing.configure_signing(
                Settings(_env_file=None, event_signing_key=SecretStr("short"))  # type: ignore[call-arg]
            )
        assert signing.signature({"a": "b"}, key=TEST_SIGNING_KEY.encode())  # unchanged key
        assert TEST_SIGNING_KEY not in repr(signing._key)
        settings = Settings(_env_file=None, event_signing_key=SecretStr(TEST_SIGNING_KEY))  # type: ignore[call-arg]
        assert TEST_SIGNING_KEY not in repr(settings)
        assert TEST_SIGNING_KEY in settings.secret_values()  # masked by the log filter


class TestParsing:
    def test_bad_ss58_hotkey_is_refused(self) -> None:
        fields = _scored(hotkey="not-an-ss58").to_fields()
        with pytest.raises(ValueError, match="SS58"):
            SentimentScored.from_fields(fields)
        checksum = ALICE[:-1] + ("A" if ALICE[-1] != "A" else "B")
        with pytest.raises(ValueError, match="SS58"):
            SentimentScored.from_fields(_scored(hotkey=checksum).to_fields())

    def test_netuid_out_of_range_is_refused(self) -> None:
        fields = dict(_scored().to_fields(), netuid="65536")
        with pytest.raises(ValidationError):
            SentimentScored.from_fields(fields)
        with pytest.raises(ValidationError):
            SentimentScored.from_fields(dict(fields, netuid="-1"))

    def test_entry_of_another_type_is_refused(self) -> None:
        fields = DividendRequested(trade_id="t", netuid=1, hotkey=ALICE, source="api").to_fields()
        with pytest.raises(ValueError, match="dividend_requested"):
            SentimentScored.from_fields(fields)
