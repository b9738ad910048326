"""Trade records shared by the stages: every stage can be the first to see a trade."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis
from tortoise.models import Model

from pipeline.worker import Drop, StreamEntry
from shared.bus import publish, publish_many
from shared.db.bulk import insert_many, insert_sql, update_by
from shared.db.models import Trade
from shared.events import Event, decode_fields
from shared.ids import utcnow
from shared.signing import SignatureError, verify

E = TypeVar("E", bound=Event)


def parse_event(cls: type[E], entry: StreamEntry) -> E:
    """The entry as `cls`, from a holder of EVENT_SIGNING_KEY only.

    An unsigned or badly signed entry, or one that can never parse (wrong type, bad
    SS58 hotkey, netuid out of range), goes straight to the dead letters with the
    reason, before the stage touches the database or publishes anything.
    """
    fields = decode_fields(entry.fields)
    try:
        verify(fields)
    except SignatureError as exc:
        raise Drop(f"{exc} in {cls.TYPE} entry") from exc
    try:
        return cls.from_fields(fields)
    except (ValidationError, ValueError) as exc:
        raise Drop(f"malformed {cls.TYPE} entry: {exc}") from exc


async def ensure_trades(events: Iterable[Event]) -> None:
    """Record the trades seen for the first time (one INSERT … ON CONFLICT DO NOTHING)."""
    await insert_many(trade_rows(events))


# A trade's status and its reason (None: the reason it has stays).
Move = tuple[str, str | None]


def trade_rows(events: Iterable[Event], moves: Mapping[str, Move] | None = None) -> list[Trade]:
    """The trade rows of `events`, one per trade, in trade order (one lock order for
    concurrent inserts); with `moves`, a trade is born with its status there.

    A trade's age starts when it was requested (the signed event's time, never in the
    future), not when a stage first got to it: after an outage MAX_EVENT_AGE_S must still
    see how long the request waited."""
    now = utcnow()
    moves = moves or {}
    trades: dict[str, Trade] = {}
    for event in events:
        row = trades[event.trade_id] = Trade(
            trade_id=event.trade_id,
            netuid=event.netuid,
            hotkey=event.hotkey,
            source=event.source,
            request_id=getattr(event, "request_id", None),
            requested_by=getattr(event, "requested_by", None),
            replay_of=getattr(event, "replay_of", None),
            created_at=min(event.occurred_at, now),
        )
        row.status, reason = moves.get(event.trade_id, (row.status, None))
        if reason is not None:
            row.reason = reason
    return [trades[trade_id] for trade_id in sorted(trades)]


async def store_records(
    records: Sequence[Model],
    events: Iterable[Event],
    moves: Mapping[str, Move],
    *,
    before: Collection[str],
) -> set[str]:
    """INSERT a stage's `records` (one per trade, ON CONFLICT DO NOTHING) with the trades of
    `events`, and move every trade whose record went in to its status in `moves`, from a
    status in `before` only (the statuses a trade has before the stage's record is stored:
    never backwards). Returns the trades whose record went in.

    On PostgreSQL this is one statement (one round trip, one commit): a trade born in it
    carries its status from the start, one already there is updated in it. A record another
    consumer stored first is not inserted and its trade is not moved here (see
    `catch_up`). On SQLite the trades go in first, as requested, then the records, then the
    moves: a process that dies in between leaves a stored record whose trade is still
    requested, which the redelivery catches up."""
    if not records:
        return set()
    meta = type(records[0])._meta
    db = meta.db
    key = meta.fields_db_projection["trade_id"]
    if db.capabilities.dialect != "postgres":
        await insert_many(trade_rows(events))
        inserted = set(await insert_many(records, returning="trade_id"))
        await catch_up({t: moves[t] for t in inserted}, before=before)
        return inserted
    parents, values = insert_sql(trade_rows(events, moves), 0, True)
    own, more = insert_sql(records, len(values), True)
    values.extend(more)
    ids = sorted(moves)
    values += [utcnow(), ids, [moves[i][0] for i in ids], [moves[i][1] for i in ids]]
    values.append(sorted(before))
    at, id_list, statuses, reasons, from_list = (f"${len(values) - n}" for n in (4, 3, 2, 1, 0))
    # Every name comes from the models' metadata, every value is a bound parameter. The
    # UPDATE sees the rows as they were before the statement: a trade born in it is not
    # there (it already has its status), one already there is. The one-time filter on
    # `born` runs it first, so every batch locks its trades (in trade order), then its
    # records, then the trades it moves: concurrent batches take their locks alike.
    table = Trade._meta.db_table
    sql = (
        f"WITH born AS ({parents} RETURNING trade_id), "  # noqa: S608
        f'mine AS ({own} RETURNING "{key}" AS trade_id), '
        f'moved AS (UPDATE "{table}" AS t SET status = m.status, '
        f"reason = COALESCE(m.reason, t.reason), updated_at = {at} "
        f"FROM unnest({id_list}::text[], {statuses}::text[], {reasons}::text[]) "
        "AS m(trade_id, status, reason) "
        "WHERE t.trade_id = m.trade_id AND m.trade_id IN (SELECT trade_id FROM mine) "
        f"AND t.status = ANY({from_list}::text[]) "
        "RETURNING t.trade_id) "
        "SELECT trade_id, trade_id IN (SELECT trade_id FROM born) "
        "OR trade_id IN (SELECT trade_id FROM moved) AS moved FROM mine "
        "WHERE (SELECT count(*) FROM born) >= 0"
    )
    rows = await db.execute_query_dict(sql, values)
    # A trade another consumer stored between this statement's snapshot and its insert is
    # neither born here nor seen by the UPDATE: moved on its own.
    await catch_up(
        {r["trade_id"]: moves[r["trade_id"]] for r in rows if not r["moved"]}, before=before
    )
    return {r["trade_id"] for r in rows}


async def catch_up(moves: Mapping[str, Move], *, before: Collection[str]) -> None:
    """Move each trade to its status in `moves` if it is still at one of `before`: for a
    stage's record stored earlier whose trade was not moved with it (a consumer that died
    between the two, a trade stored by another consumer meanwhile). A trade a later stage
    has moved on stays where it is."""
    by_move: dict[Move, list[str]] = {}
    for trade_id, move in moves.items():
        by_move.setdefault(move, []).append(trade_id)
    for (status, reason), ids in by_move.items():
        await set_statuses(sorted(ids), status, reason, only_from=before)


async def set_status(trade_id: str, status: str, reason: str | None = None) -> None:
    await set_statuses([trade_id], status, reason)


async def set_statuses(
    trade_ids: Sequence[str],
    status: str,
    reason: str | None = None,
    *,
    only_from: Collection[str] | None = None,
) -> None:
    """One UPDATE of every trade in `trade_ids` to `status` (and `reason`, when given); with
    `only_from`, of those whose status is one of it."""
    values: dict[str, object] = {"status": status, "updated_at": utcnow()}
    if reason is not None:
        values["reason"] = reason
    where = None if only_from is None else ("status", only_from)
    await update_by(Trade, "trade_id", trade_ids, values, where=where)


class Publisher:
    """Publishes a stage's event; called only after the record it describes is committed."""

    def __init__(self, redis: Redis, *, maxlen: int) -> None:
        self._redis = redis
        self._maxlen = maxlen

    async def __call__(self, event: Event) -> None:
        await publish(self._redis, event, maxlen=self._maxlen)

    async def many(self, events: Sequence[Event]) -> None:
        """Publish `events` in one round trip."""
        await publish_many(self._redis, events, maxlen=self._maxlen)
