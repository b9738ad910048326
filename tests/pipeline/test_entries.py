"""What a handler is given and may answer: `Stage`, per-entry runs, decoding, reply shapes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.entries import (
    Outcomes,
    Stage,
    StreamEntry,
    decode_entry,
    stream_entries,
)

STREAM = "stream:test_entries"
GROUP = "testers"


def entry(n: int) -> StreamEntry:
    return StreamEntry(STREAM, GROUP, f"{n}-0", {"n": str(n)}, 1)


class TestStage:
    def test_takes_exactly_one_of_handler_or_batch(self) -> None:
        async def handler(entry: StreamEntry) -> None:
            return None

        async def batch(entries: Any, outcomes: Outcomes) -> None:
            return None

        with pytest.raises(ValueError, match="either a per-entry handler or a batch handler"):
            Stage("s", STREAM, GROUP)
        with pytest.raises(ValueError, match="either a per-entry handler or a batch handler"):
            Stage("s", STREAM, GROUP, handler, batch=batch)
        assert Stage("s", STREAM, GROUP, handler).batched is False
        batched = Stage("s", STREAM, GROUP, batch=batch)
        assert batched.batched is True
        assert batched.run is batch
        assert (batched.name, batched.stream, batched.group) == ("s", STREAM, GROUP)

    async def test_a_per_entry_stage_reports_done_for_each_entry_it_handled(self) -> None:
        seen: list[str] = []

        async def handler(entry: StreamEntry) -> None:
            seen.append(entry.entry_id)

        outcomes: Outcomes = {}
        await Stage("s", STREAM, GROUP, handler).run([entry(1), entry(2)], outcomes)
        assert seen == ["1-0", "2-0"]
        assert outcomes == {"1-0": None, "2-0": None}

    async def test_a_per_entry_stage_reports_nothing_for_an_entry_that_raised(self) -> None:
        async def handler(entry: StreamEntry) -> None:
            if entry.entry_id == "2-0":
                raise RuntimeError("boom")

        outcomes: Outcomes = {}
        with pytest.raises(RuntimeError, match="boom"):
            await Stage("s", STREAM, GROUP, handler).run([entry(1), entry(2), entry(3)], outcomes)
        # The worker fills the missing outcome with the exception; "1-0" is done.
        assert outcomes == {"1-0": None}


class TestDecodeEntry:
    def test_utf8_fields_are_decoded_and_not_poison(self) -> None:
        fields, poison = decode_entry({b"trade_id": b"t-1", "n": b"7", b"text": "caf\u00e9"})
        assert fields == {"trade_id": "t-1", "n": "7", "text": "caf\u00e9"}
        assert poison is None

    def test_a_non_utf8_value_is_poison_with_a_readable_copy(self) -> None:
        fields, poison = decode_entry({b"trade_id": b"t-bad", b"n": b"\xff\xfe"})
        assert fields == {"trade_id": "t-bad", "n": "\\xff\\xfe"}
        assert poison == "Drop: fields are not valid UTF-8: n"

    def test_a_non_utf8_name_is_named_readably(self) -> None:
        fields, poison = decode_entry({b"\xc3(": b"x", b"ok": b"\xe9t\xe9", b"fine": b"1"})
        assert fields == {"\\xc3(": "x", "ok": "\\xe9t\\xe9", "fine": "1"}
        assert poison == "Drop: fields are not valid UTF-8: \\xc3(, ok"


class TestStreamEntries:
    def test_empty_replies(self) -> None:
        assert stream_entries(None) == []
        assert stream_entries([]) == []
        assert stream_entries({}) == []
        assert stream_entries({b"s": [[]]}) == []
        assert stream_entries([[b"s", []]]) == []

    def test_parsed_shapes(self) -> None:
        pairs = [(b"1-0", {b"n": b"1"}), (b"2-0", {b"n": b"2"})]
        assert stream_entries([[b"s", pairs]]) == pairs  # RESP2
        assert stream_entries({b"s": pairs}) == pairs  # dict of entries
        assert stream_entries({b"s": [pairs]}) == pairs  # RESP3 as redis-py parses it

    @pytest.mark.parametrize("protocol", [2, 3])
    async def test_real_xreadgroup_replies(
        self, redis: Redis, redis_url: str, protocol: int
    ) -> None:
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        first = await redis.xadd(STREAM, {"n": "1"})
        second = await redis.xadd(STREAM, {"n": "2"})
        client = Redis.from_url(redis_url, protocol=protocol)
        try:
            reply = await client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=10)
            empty = await client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=10)
        finally:
            await client.aclose()
        pairs = stream_entries(reply)
        assert [(i, dict(f)) for i, f in pairs] == [(first, {b"n": b"1"}), (second, {b"n": b"2"})]
        assert stream_entries(empty) == []
