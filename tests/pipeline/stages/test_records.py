"""`store_records` on SQLite and PostgreSQL: a stage's records go in with their trades, and
each trade whose record went in is at its status in the same commit."""

from __future__ import annotations

from pipeline.stages.records import ensure_trades, store_records
from shared.db.models import Trade, TweetBatch
from shared.events import DividendRequested
from tests.fakes.chain import ALICE

BEFORE = ("requested", "tweets_fetched")


def requested(trade_id: str) -> DividendRequested:
    return DividendRequested(trade_id=trade_id, netuid=3, hotkey=ALICE, source="api")


def batch(trade_id: str, query: str = "ours") -> TweetBatch:
    return TweetBatch(trade_id=trade_id, source="datura", query=query, count=0, tweets=[])


async def trades() -> dict[str, tuple[str, str | None]]:
    return {t.trade_id: (t.status, t.reason) for t in await Trade.all()}


async def test_new_trades_are_born_at_their_status(either_db: str) -> None:
    moves = {"t0": ("tweets_fetched", None), "t1": ("ended", "Datura refused the search")}
    got = await store_records(
        [batch("t0"), batch("t1")], map(requested, moves), moves, before=BEFORE
    )
    assert got == {"t0", "t1"}
    assert await trades() == {
        "t0": ("tweets_fetched", None),
        "t1": ("ended", "Datura refused the search"),
    }
    assert await TweetBatch.all().count() == 2


async def test_a_trade_already_there_is_moved_and_keeps_its_reason(either_db: str) -> None:
    await ensure_trades([requested("t0"), requested("t1")])
    await Trade.filter(trade_id="t0").update(reason="waited out an outage")
    moves = {"t0": ("scored", None), "t1": ("ended", "no tweets found")}
    assert await store_records(
        [batch("t0"), batch("t1")], map(requested, moves), moves, before=BEFORE
    ) == {
        "t0",
        "t1",
    }
    assert await trades() == {
        "t0": ("scored", "waited out an outage"),
        "t1": ("ended", "no tweets found"),
    }


async def test_a_record_stored_first_by_another_consumer_leaves_its_trade_alone(
    either_db: str,
) -> None:
    await ensure_trades([requested("t0")])
    await TweetBatch.create(trade_id="t0", source="cache", query="theirs", count=0, tweets=[])
    await Trade.filter(trade_id="t0").update(status="succeeded")  # later stages moved it on
    moves = {"t0": ("tweets_fetched", None), "t1": ("tweets_fetched", None)}
    got = await store_records(
        [batch("t0"), batch("t1")], map(requested, moves), moves, before=BEFORE
    )
    assert got == {"t1"}
    assert await trades() == {"t0": ("succeeded", None), "t1": ("tweets_fetched", None)}
    assert (await TweetBatch.get(trade_id="t0")).query == "theirs"


async def test_a_batch_padded_to_a_power_of_two_stores_each_row_once(either_db: str) -> None:
    """Rows are padded (see shared/db/bulk.py): a batch of three is stored as four rows of
    VALUES, the repeated row skipped by its own unique key."""
    moves = {f"t{n}": ("tweets_fetched", None) for n in range(3)}
    got = await store_records(
        [batch(t) for t in moves], map(requested, moves), moves, before=BEFORE
    )
    assert got == set(moves)
    assert await Trade.all().count() == 3
    assert await TweetBatch.all().count() == 3
