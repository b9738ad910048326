"""Scenario 5: poison entries beside valid ones, with three pipeline processes.

Before the fix an entry whose bytes were not UTF-8 failed the whole read, so it and the
healthy entries read with it stayed pending for ever (delivery count 7 with
MAX_DELIVERIES=2). Here every kind of poison lands on every stage's stream between valid
trades: each poison entry must reach the dead letters within MAX_DELIVERIES with its
reason, and every valid trade must complete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import pytest

from shared.constants import (
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_TWEETS_FETCHED,
)
from shared.events import text
from shared.ids import iso, new_id, utcnow
from shared.signing import sign
from tests.devchain.seed import DEMO_HOTKEY
from tests.resilience.results import Row, record
from tests.resilience.stack import Stack

pytestmark = pytest.mark.resilience

VALID_TRADES = 200
MAX_DELIVERIES = 3  # Stack.env
STREAM_TYPES = {
    STREAM_DIVIDEND_REQUESTED: "dividend_requested",
    STREAM_TWEETS_FETCHED: "tweets_fetched",
    STREAM_SENTIMENT_SCORED: "sentiment_scored",
}
# kind -> (fields builder, what its dead-letter error must say)
Build = Callable[[str], dict[bytes, bytes]]


def _base(kind: str) -> dict[str, str]:
    return {
        "type": kind,
        "event_id": new_id(),
        "version": "1",
        "trade_id": new_id(),
        "occurred_at": iso(utcnow()),
        "netuid": "18",
        "hotkey": DEMO_HOTKEY,
        "source": "api",
    }


def _encode(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in fields.items()}


def non_utf8(kind: str) -> dict[bytes, bytes]:
    fields = _encode(sign(_base(kind)))
    fields[b"hotkey"] = b"\xff\xfe\x80 not utf-8"
    return fields


def missing_fields(kind: str) -> dict[bytes, bytes]:
    fields = _base(kind)
    for name in ("netuid", "hotkey", "source"):
        del fields[name]
    return _encode(sign(fields))  # signed by a key holder, still never a valid event


def megabyte_field(kind: str) -> dict[bytes, bytes]:
    fields = _base(kind)
    fields["hotkey"] = "5" * (1024 * 1024)
    return _encode(sign(fields))


def unsigned(kind: str) -> dict[bytes, bytes]:
    return _encode(_base(kind))


POISON: dict[str, tuple[Build, str]] = {
    "non-UTF-8 bytes": (non_utf8, "not valid UTF-8"),
    "missing fields": (missing_fields, "malformed"),
    "1 MB field": (megabyte_field, "malformed"),
    "unsigned": (unsigned, "unsigned event"),
}


@pytest.mark.timeout(240)
def test_poison_entries_are_dead_lettered_and_valid_trades_complete(
    stack: Callable[..., Stack],
) -> None:
    asyncio.run(scenario(stack(pipelines=3, dry_run=True)))


async def scenario(st: Stack) -> None:
    redis = st.client()
    # (stream, entry id) -> (kind, reason, sent at). The stream is part of the key: entry ids
    # are per stream, so two streams can hand out the same id within one millisecond.
    expected: dict[tuple[str, str], tuple[str, str, float]] = {}
    trade_ids: list[str] = []
    try:
        for batch in range(4):  # poison between batches of valid trades
            trade_ids += await st.enqueue(VALID_TRADES // 4, label=f"poison-valid-{batch}")
            for kind, (build, reason) in POISON.items():
                for stream, event_type in STREAM_TYPES.items():
                    entry = await redis.xadd(stream, build(event_type))  # type: ignore[arg-type]
                    expected[(stream, text(entry))] = (kind, reason, time.monotonic())
        began = time.monotonic()
        fate, took = await st.wait_final(trade_ids, timeout=150)
        while len(await st.dead_letters()) < len(expected) and time.monotonic() - began < 30:
            await asyncio.sleep(0.2)
        fate = await st.fate(trade_ids)
    finally:
        await redis.aclose()

    by_entry = {(d["stream"], d["entry_id"]): d for d in fate.dead_letters}
    assert len(by_entry) == len(fate.dead_letters), "one dead letter per poison entry"
    assert set(by_entry) == set(expected), "every poison entry and nothing else is dead-lettered"
    for key, (kind, reason, _) in expected.items():
        letter = by_entry[key]
        assert int(letter["deliveries"]) <= MAX_DELIVERIES, (kind, letter)
        assert reason in letter["error"], (kind, letter["error"][:300])
        assert len(orjson.loads(letter["original"])) > 0
    assert fate.lost == [] and fate.final == VALID_TRADES, fate.statuses
    assert fate.run_twice == 0
    deliveries = max(int(by_entry[e]["deliveries"]) for e in expected)
    record(
        Row(
            key="5",
            scenario="Poison entries beside valid ones",
            load=f"{VALID_TRADES} valid trades + {len(expected)} poison entries "
            f"({len(POISON)} kinds × 3 streams), 3 pipeline processes",
            fault="non-UTF-8 bytes, missing fields, a 1 MB field, no signature",
            lost=len(fate.lost),
            twice=fate.run_twice,
            recover=f"all {len(expected)} dead-lettered with their reason after ≤ {deliveries} "
            f"delivery (MAX_DELIVERIES={MAX_DELIVERIES}); valid trades done in {took:.0f} s",
        )
    )
