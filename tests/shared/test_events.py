from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from shared import signing
from shared.bus import publish
from shared.events import DeadLetter, DividendRequested, SentimentScored, TweetsFetched
from shared.settings import Settings
from shared.tweets import Tweet
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


class TestNext:
    def test_the_identity_is_copied_and_the_other_fields_are_given(self) -> None:
        consumed = DividendRequested(
            trade_id="t9", netuid=18, hotkey=ALICE, source="schedule", request_id="r-1"
        )
        tweet = Tweet(id="1", text="up only", like_count=3)
        fetched = consumed.next(
            TweetsFetched, count=1, tweet_source="datura", query="Netuid 18", tweets=[tweet]
        )
        assert isinstance(fetched, TweetsFetched)
        assert (fetched.trade_id, fetched.netuid, fetched.hotkey, fetched.source) == (
            "t9",
            18,
            ALICE,
            "schedule",
        )
        assert (fetched.count, fetched.tweet_source, fetched.query) == (1, "datura", "Netuid 18")
        assert fetched.tweets == [tweet]
        assert fetched.event_id != consumed.event_id
        scored = fetched.next(SentimentScored, score=-20, backend="vader")
        assert (scored.trade_id, scored.netuid, scored.hotkey, scored.source) == (
            "t9",
            18,
            ALICE,
            "schedule",
        )
        assert (scored.score, scored.backend, scored.tweets_scored) == (-20, "vader", 0)

    def test_the_identity_cannot_be_given_by_hand(self) -> None:
        consumed = DividendRequested(trade_id="t9", netuid=18, hotkey=ALICE, source="api")
        with pytest.raises(TypeError, match="trade_id"):
            consumed.next(SentimentScored, trade_id="other", backend="llm")

    def test_the_next_event_round_trips_through_its_fields(self) -> None:
        consumed = DividendRequested(trade_id="t9", netuid=4, hotkey=ALICE, source="manual")
        fetched = consumed.next(
            TweetsFetched,
            count=1,
            tweet_source="cache",
            query="q",
            tweets=[Tweet(id="7", text="x", retweet_count=2)],
        )
        fields = fetched.to_fields()
        signing.verify(fields)
        assert TweetsFetched.from_fields(fields) == fetched


ORIGINAL = {"type": "dividend_requested", "trade_id": "t5", "netuid": "x", "sig": "abc"}


class TestDeadLetter:
    def _letter(self) -> DeadLetter:
        return DeadLetter.of(
            "stream:dividend_requested",
            "tweets",
            "1700000000000-3",
            ORIGINAL,
            deliveries=4,
            error="Drop: malformed",
        )

    def test_to_fields_is_signed_and_names_the_stream_stream(self) -> None:
        fields = self._letter().to_fields()
        signing.verify(fields)
        assert fields["stream"] == "stream:dividend_requested"
        assert "from_stream" not in fields
        assert fields["type"] == "dead_letter"
        assert (fields["group"], fields["entry_id"]) == ("tweets", "1700000000000-3")
        assert (fields["deliveries"], fields["error"]) == ("4", "Drop: malformed")
        assert (fields["trade_id"], fields["netuid"]) == ("t5", "x")  # copied as they were
        assert "hotkey" not in fields and "source" not in fields

    async def test_from_fields_round_trip_through_a_stream(self, redis: Redis) -> None:
        letter = self._letter()
        await redis.xadd("stream:dead_letter", letter.to_fields())  # type: ignore[arg-type]
        rows: Any = await redis.xrange("stream:dead_letter")
        [(_, raw)] = rows
        back = DeadLetter.from_fields(raw)
        assert back == letter
        assert back.from_stream == "stream:dividend_requested"
        assert back.original_fields == ORIGINAL

    def test_original_fields(self) -> None:
        assert self._letter().original_fields == ORIGINAL
        odd = self._letter().model_copy(update={"original": '["not", "a", "dict"]'})
        assert odd.original_fields == {}
        numbers = self._letter().model_copy(update={"original": '{"netuid": 3, "ok": true}'})
        assert numbers.original_fields == {"netuid": "3", "ok": "True"}

    def test_from_fields_refuses_another_type(self) -> None:
        fields = DividendRequested(trade_id="t", netuid=1, hotkey=ALICE, source="api").to_fields()
        with pytest.raises(ValueError, match="dividend_requested"):
            DeadLetter.from_fields(fields)
