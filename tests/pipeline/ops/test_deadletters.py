"""Dead letters are read as the signed `DeadLetter` events the worker writes.

Anything that can write to Redis can add entries to stream:dead_letter: old letters, malformed
or foreign ones, letters whose fields were edited. They are listed and shown (raw, marked
invalid, escaped), never crash a command, and are never requeued. Real Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from pipeline.ops import deadletters
from shared import signing
from shared.constants import STREAM_DEAD_LETTER, STREAM_DIVIDEND_REQUESTED
from shared.events import DeadLetter, DividendRequested, decode_fields, text
from tests.conftest import TEST_SIGNING_KEY
from tests.fakes.chain import ALICE
from tests.pipeline.test_cli import _run

OTHER_KEY = b"not-the-signing-key-0000"


def _original(trade_id: str = "t-dl") -> dict[str, str]:
    return DividendRequested(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api").to_fields()


def _letter(original: dict[str, Any], *, error: str = "Drop: x") -> dict[str, str]:
    """A dead letter as the worker writes it (signed), of an entry with these fields."""
    return DeadLetter.of(
        STREAM_DIVIDEND_REQUESTED, "tweets", "1-0", original, deliveries=3, error=error
    ).to_fields()


async def _add(redis: Redis, fields: dict[Any, Any]) -> str:
    return text(await redis.xadd(STREAM_DEAD_LETTER, fields))


async def _refused(redis: Redis, entry_id: str, match: str) -> None:
    with pytest.raises(deadletters.DeadLetterError, match=match):
        await deadletters.requeue(redis, entry_id, maxlen=100)
    assert not await redis.exists(STREAM_DIVIDEND_REQUESTED)  # nothing put back
    assert await redis.xrange(STREAM_DEAD_LETTER, min=entry_id, max=entry_id)  # letter kept


def _edited(fields: dict[str, str]) -> dict[str, str]:
    return {**fields, "deliveries": "1"}  # any field changed after signing


def _other_key(fields: dict[str, str]) -> dict[str, str]:
    return signing.sign(fields, key=OTHER_KEY)


def _unsigned(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "sig"}


@pytest.mark.parametrize("forge", [_edited, _other_key, _unsigned])
async def test_a_letter_not_signed_with_the_key_is_never_requeued(redis: Redis, forge: Any) -> None:
    # The entry inside is genuine and signed: only the letter around it is not.
    entry_id = await _add(redis, forge(_letter(_original())))
    await _refused(redis, entry_id, "not a valid dead letter")


@pytest.mark.parametrize(
    "fields",  # made in the test: signing needs the key the fixtures install
    [
        lambda: {"error": "no original at all"},
        lambda: {"stream": STREAM_DIVIDEND_REQUESTED, "original": "not json"},
        lambda: {"stream": STREAM_DIVIDEND_REQUESTED, "original": b"\xff\xfe"},  # not UTF-8
        _original,  # a genuine signed event of another type, copied here
        lambda: signing.sign({**_letter(_original()), "deliveries": "many"}),  # signed, malformed
    ],
    ids=["no-original", "not-json", "not-utf8", "another-type", "malformed"],
)
async def test_foreign_entries_are_refused_not_crashed(redis: Redis, fields: Any) -> None:
    entry_id = await _add(redis, fields())
    await _refused(redis, entry_id, "not a valid dead letter")


@pytest.mark.parametrize(
    "original",
    [
        '["a", "list"]',
        '{"type": "dividend_requested", "netuid": 3}',  # not an entry's (string) fields
        "",
    ],
)
async def test_a_signed_letter_whose_original_is_not_an_entry_is_refused(
    redis: Redis, original: str
) -> None:
    fields = signing.sign({**_letter(_original()), "original": original})
    entry_id = await _add(redis, fields)
    await _refused(redis, entry_id, "no original entry")


async def test_a_signed_letter_of_a_signed_entry_is_requeued_untouched(redis: Redis) -> None:
    original = _original()
    entry_id = await _add(redis, _letter(original))
    [letter] = await deadletters.list_letters(redis)
    assert letter.event is not None and letter.invalid is None
    assert letter.event.from_stream == STREAM_DIVIDEND_REQUESTED
    new_id = await deadletters.requeue(redis, entry_id, maxlen=100)
    rows: Any = await redis.xrange(STREAM_DIVIDEND_REQUESTED, min=new_id, max=new_id)
    assert decode_fields(rows[0][1]) == original
    assert await redis.xlen(STREAM_DEAD_LETTER) == 0


async def test_invalid_letters_are_listed_raw_and_marked(redis: Redis) -> None:
    await _add(redis, {"error": "\x1b[2Jwiped", "trade_id": "x\ny"})
    await _add(redis, _edited(_letter(_original())))
    await _add(redis, {"original": b"\xff"})
    await _add(redis, _letter(_original("good")))
    good, non_utf8, edited, foreign = await deadletters.list_letters(redis)
    assert good.event is not None and good.event.trade_id == "good" and good.invalid is None
    assert (non_utf8.event, non_utf8.invalid) == (None, "not UTF-8")
    assert (edited.event, edited.invalid) == (None, "bad signature")
    assert edited.fields["deliveries"] == "1"
    assert (foreign.event, foreign.invalid) == (None, "unsigned event")
    lines = [deadletters.describe(letter) for letter in (good, non_utf8, edited, foreign)]
    assert "[invalid" not in lines[0]
    assert all("[invalid: " in line for line in lines[1:])
    assert "\\x1b[2Jwiped" in lines[3] and "trade=x\\ny" in lines[3]
    shown = deadletters.show_lines(foreign)
    assert shown[0].startswith("invalid: unsigned event")
    assert "error: \\x1b[2Jwiped" in shown
    as_json = deadletters.letter_json(foreign, original=True)
    assert as_json["invalid"] == "unsigned event" and as_json["original"] is None
    assert deadletters.letter_json(good, original=True)["original"]["trade_id"] == "good"


async def test_the_commands_never_crash_nor_print_control_characters(
    redis: Redis, redis_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "EVENT_SIGNING_KEY": TEST_SIGNING_KEY}
    hostile = await _add(redis, {"error": "\x1b]0;owned\x07", "original": b"\xff"})
    signed = await _add(redis, _letter(_original(), error="boom\x1b[31m\nnext"))
    listed = _run(env, "dead-letter", "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 shown, 2 in total" in listed.stdout
    for action in ("list", "show"):
        for entry_id in (hostile, signed):
            result = _run(env, "dead-letter", action, *([entry_id] if action == "show" else []))
            assert result.returncode == 0, result.stderr
            assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    shown = _run(env, "dead-letter", "show", hostile)
    assert shown.stdout.startswith("invalid: not UTF-8")
    listed_json = orjson.loads(_run(env, "dead-letter", "list", "--json").stdout)
    assert [letter["invalid"] for letter in listed_json["letters"]] == [None, "not UTF-8"]
    refused = _run(env, "dead-letter", "requeue", hostile)
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert "not a valid dead letter" in refused.stderr
    bad_id = _run(env, "dead-letter", "show", "not-an-id")
    assert bad_id.returncode == 1 and "not a dead letter id: 'not-an-id'" in bad_id.stderr
    missing = _run(env, "dead-letter", "show", "1-0")
    assert missing.returncode == 1 and "no dead letter 1-0" in missing.stderr
    assert await redis.xlen(STREAM_DEAD_LETTER) == 2


async def test_two_requeues_of_one_letter_publish_it_once(redis: Redis, redis_url: str) -> None:
    entry_id = await _add(redis, _letter(_original()))
    other = Redis.from_url(redis_url)
    try:
        results = await asyncio.gather(
            deadletters.requeue(redis, entry_id, maxlen=100),
            deadletters.requeue(other, entry_id, maxlen=100),
            return_exceptions=True,
        )
    finally:
        await other.aclose()
    published = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, deadletters.DeadLetterError)]
    assert len(published) == 1 and len(refused) == 1, results
    assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1
    assert await redis.xlen(STREAM_DEAD_LETTER) == 0


async def test_a_letter_gone_between_its_checks_and_its_requeue_is_not_published(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_id = await _add(redis, _letter(_original()))
    get_letter = deadletters.get_letter

    async def read_then_lose(client: Redis, letter_id: str) -> deadletters.Letter:
        letter = await get_letter(client, letter_id)
        await redis.xdel(STREAM_DEAD_LETTER, letter_id)  # another operator requeued it
        return letter

    monkeypatch.setattr(deadletters, "get_letter", read_then_lose)
    with pytest.raises(deadletters.DeadLetterError, match="is gone"):
        await deadletters.requeue(redis, entry_id, maxlen=100)
    assert not await redis.exists(STREAM_DIVIDEND_REQUESTED)


async def test_an_id_of_a_millisecond_only_is_refused_not_matched(redis: Redis) -> None:
    async with redis.pipeline(transaction=True) as pipe:  # three letters in one millisecond
        for n in range(3):
            pipe.xadd(STREAM_DEAD_LETTER, _letter(_original(f"t-{n}")))  # type: ignore[arg-type]
        ids = [text(i) for i in await pipe.execute()]
    millisecond = ids[0].split("-")[0]
    if ids[-1].split("-")[0] != millisecond:
        pytest.skip("the letters landed in different milliseconds")
    with pytest.raises(deadletters.DeadLetterError, match="not a dead letter id"):
        await deadletters.requeue(redis, millisecond, maxlen=100)
    with pytest.raises(deadletters.DeadLetterError, match="not a dead letter id"):
        await deadletters.get_letter(redis, millisecond)
    assert (await deadletters.get_letter(redis, ids[1])).id == ids[1]
    assert not await redis.exists(STREAM_DIVIDEND_REQUESTED)


async def test_a_requeue_that_cannot_write_keeps_the_letter(redis: Redis) -> None:
    entry_id = await _add(redis, _letter(_original()))
    await redis.set(STREAM_DIVIDEND_REQUESTED, "not a stream")  # XADD fails: WRONGTYPE
    with pytest.raises(deadletters.DeadLetterError, match="not requeued"):
        await deadletters.requeue(redis, entry_id, maxlen=100)
    assert await redis.xlen(STREAM_DEAD_LETTER) == 1


async def test_json_output_survives_huge_numbers_and_escapes_terminal_controls(
    redis: Redis, redis_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "EVENT_SIGNING_KEY": TEST_SIGNING_KEY}
    huge = "9" * 30  # a netuid no event has, copied as written into a signed letter
    fields = {**_original(), "netuid": huge, "hotkey": "a\u009b2Jb\u202ec"}
    letter = DeadLetter.of(
        STREAM_DIVIDEND_REQUESTED, "tweets", "1-0", fields, deliveries=5, error="x\u2028y"
    )
    entry_id = await _add(redis, letter.to_fields())
    for args in (("list", "--json"), ("show", entry_id, "--json")):
        result = _run(env, "dead-letter", *args)
        assert result.returncode == 0, result.stderr
        for raw in ("\u009b", "\u202e", "\u2028"):
            assert raw not in result.stdout
        shown = orjson.loads(result.stdout)
        one = shown["letters"][0] if "letters" in shown else shown
        assert one["netuid"] is None and one["deliveries"] == 5
        assert one["hotkey"] == "a\u009b2Jb\u202ec"  # the same JSON, escaped
        assert one["error"] == "x\u2028y"


async def test_bad_counts_and_durations_are_errors_not_tracebacks(
    redis: Redis, redis_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "EVENT_SIGNING_KEY": TEST_SIGNING_KEY}
    await _add(redis, _letter(_original()))
    for count in ("0", "-3"):
        result = _run(env, "dead-letter", "list", "--count", count)
        assert result.returncode == 2 and "must be 1 or more" in result.stderr
        assert "Traceback" not in result.stderr
    purged = _run(env, "dead-letter", "purge", "--older-than", "99999999d")
    assert purged.returncode == 0, purged.stderr
    assert "purged 0 dead letters" in purged.stdout
    assert await redis.xlen(STREAM_DEAD_LETTER) == 1
