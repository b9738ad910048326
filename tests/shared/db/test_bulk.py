"""Multi-row writes and keyed reads of shared/db/bulk.py, on SQLite and PostgreSQL: the
statements the batch stages make."""

from __future__ import annotations

from shared.db.bulk import insert_many, padded, select_by, update_by
from shared.db.models import Trade, TweetBatch
from shared.ids import utcnow
from shared.tweets import Tweet


def trade(trade_id: str) -> Trade:
    return Trade(trade_id=trade_id, netuid=3, hotkey="h", source="api", created_at=utcnow())


def batch(trade_id: str, likes: int = 1) -> TweetBatch:
    tweets = [Tweet(id="1", text="gm", like_count=likes)]
    return TweetBatch(trade_id=trade_id, source="datura", query="q", count=1, tweets=tweets)


def test_padded_repeats_the_last_item_up_to_a_power_of_two() -> None:
    assert padded([]) == []
    assert padded([1]) == [1]
    assert padded([1, 2, 3]) == [1, 2, 3, 3]
    assert len(padded(list(range(17)))) == 32


async def test_rows_go_in_in_one_statement_and_taken_keys_are_skipped(either_db: str) -> None:
    await insert_many([trade("t0"), trade("t1"), trade("t2")])
    assert await insert_many([batch("t0"), batch("t1")], returning="trade_id") == ["t0", "t1"]
    # t1 is taken: only t2 goes in, and only t2 is returned
    got = await insert_many([batch("t1", likes=9), batch("t2")], returning="trade_id")
    assert got == ["t2"]
    rows = {r.trade_id: r for r in await select_by(TweetBatch, "trade_id", {"t0", "t1", "t2"})}
    assert sorted(rows) == ["t0", "t1", "t2"]
    assert rows["t1"].tweets[0].like_count == 1  # the first record stands
    assert await Trade.all().count() == 3


async def test_select_by_reads_only_the_keys_asked_for(either_db: str) -> None:
    await insert_many([trade(f"t{n}") for n in range(5)])
    rows = await select_by(Trade, "trade_id", {"t1", "t3", "missing"})
    assert sorted(r.trade_id for r in rows) == ["t1", "t3"]
    assert await select_by(Trade, "trade_id", set()) == []


async def test_update_by_changes_only_the_keyed_rows(either_db: str) -> None:
    await insert_many([trade(f"t{n}") for n in range(3)])
    await update_by(Trade, "trade_id", ["t0", "t2"], {"status": "scored", "reason": "why"})
    rows = {r.trade_id: (r.status, r.reason) for r in await Trade.all()}
    assert rows == {"t0": ("scored", "why"), "t1": ("requested", None), "t2": ("scored", "why")}


async def test_update_by_with_a_condition_leaves_the_other_rows_alone(either_db: str) -> None:
    await insert_many([trade(f"t{n}") for n in range(3)])
    await update_by(Trade, "trade_id", ["t1"], {"status": "scored"})
    await update_by(
        Trade,
        "trade_id",
        ["t0", "t1"],
        {"status": "tweets_fetched"},
        where=("status", ["requested"]),
    )
    rows = {r.trade_id: r.status for r in await Trade.all()}
    assert rows == {"t0": "tweets_fetched", "t1": "scored", "t2": "requested"}
