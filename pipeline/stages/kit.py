"""The stage kit: every record-keeping stage is parse → load/ensure trade → compute →
`event.next(...)`, a batch of entries at a time.

For a batch read by the worker (one XREADGROUP COUNT N) a `BatchStage` makes:

1. one check per entry: signature and schema (`parse_event`); a bad entry is dropped to the
   dead letters alone, the rest go on;
2. one SELECT of the stage's records already stored, for the entries that may have one: a
   redelivered entry (its consumer may have stored the record before it died), a replayed
   one, or one published more than `FRESH` ago (a requeued dead letter, a stream read
   again) is answered from its record, never computed twice. The first delivery of a fresh
   entry skips it (the hop is one round trip shorter): its record can only exist if the
   same event was published twice (step 4 finds it) or if the entry is retried in place
   after the reply to its commit was lost (then its outside call is made again, and if that
   fails, the record is looked up and answers);
3. `compute` for each trade without a record, concurrently (outside calls go through their
   clients' caches and single-flight; a trade alone in its batch, the usual case when
   trades come one at a time, is computed in the batch's own task); an error ends that
   entry alone;
4. one INSERT … ON CONFLICT DO NOTHING RETURNING of the new records, their trades inserted
   and moved to their status in the same statement on PostgreSQL (one round trip, one
   commit; `records.store_records`): a record already there (another consumer's, a
   duplicate publish's) is read back and wins, so what is published is always what is
   stored, and its trade is left where the winner's stages put it; a trade whose compute
   failed is recorded on its own, so it shows while it waits;
5. one pipelined XADD of the next events (`Event.next`: the identity travels by
   construction), none for a record that ends its trade (`ends`). A trade answered from a
   record stored before is moved to its status first if it is still behind (`before`),
   never back.

Only then does the worker ack the batch (one XACK).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

from loguru import logger
from tortoise.models import Model

from pipeline.entries import Drop, Outcomes, StreamEntry
from pipeline.stages.records import (
    Move,
    Publisher,
    catch_up,
    ensure_trades,
    parse_event,
    store_records,
)
from shared.db.bulk import select_by
from shared.events import Event
from shared.ids import utcnow
from shared.outage import outage_reason

# A first delivery of an event younger than this is a new trade's, looked up only if its
# outside call fails; an older one (a requeued dead letter, a stream read again) may have
# its record already.
FRESH = timedelta(seconds=10)

In = TypeVar("In", bound=Event)
Rec = TypeVar("Rec", bound=Model)


class BatchStage(ABC, Generic[In, Rec]):
    """A stage over a batch of `consumes` entries keeping one `record` per trade."""

    name: ClassVar[str]
    consumes: type[In]  # both from the class's parameters: BatchStage[Consumes, Record]
    record: type[Rec]
    status: ClassVar[str]  # the trade's status once this stage stored its record
    # The statuses a trade can have before this stage stores its record: the only ones it is
    # moved from (never backwards).
    before: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is BatchStage:
                cls.consumes, cls.record = get_args(base)

    def __init__(self, publish: Publisher, *, compute_timeout_s: float | None = None) -> None:
        self._publish = publish
        # Each compute's own deadline, inside the batch's handler timeout: one slow outside
        # call fails its trade, not the batch.
        self._compute_timeout_s = compute_timeout_s

    @abstractmethod
    async def compute(self, event: In) -> Rec:
        """The stage's record for a trade seen for the first time (not saved yet)."""

    @abstractmethod
    def next(self, event: In, record: Rec) -> Event:
        """The trade's next event (`event.next(...)`) from the stored `record`."""

    def ends(self, record: Rec) -> str | None:
        """Why the stored `record` ends its trade here (nothing is published), None when the
        trade goes on."""
        return None

    def move(self, record: Rec) -> Move:
        """The trade's status once `record` is stored: this stage's, or ended and why."""
        why = self.ends(record)
        return (self.status, None) if why is None else ("ended", why)

    async def run(self, entries: Sequence[StreamEntry], outcomes: Outcomes) -> None:
        """The worker's batch handler: an outcome for every entry, see the module docstring."""
        events: dict[str, In] = {}
        look_up: set[str] = set()  # the trades that may have a stored record (step 2)
        fresh_since = utcnow() - FRESH
        for entry in entries:
            try:
                event = events[entry.entry_id] = parse_event(self.consumes, entry)
            except Drop as exc:
                outcomes[entry.entry_id] = exc
                continue
            if entry.deliveries > 1 or event.source == "replay" or event.occurred_at < fresh_since:
                look_up.add(event.trade_id)
        if not events:
            return
        stored = await self._load(look_up)
        first: dict[str, In] = {}  # a trade twice in one batch is computed once
        for event in events.values():
            if event.trade_id not in stored:
                first.setdefault(event.trade_id, event)
        failed, written = await self._compute_missing(list(first.values()), stored, look_up)
        publish: list[Event] = []
        answered: dict[str, Move] = {}  # trades answered from a record stored before
        for entry_id, event in events.items():
            if event.trade_id in failed:
                outcomes[entry_id] = failed[event.trade_id]
                continue
            record = stored[event.trade_id]
            if event.trade_id not in written:
                answered[event.trade_id] = self.move(record)
            if self.ends(record) is None:
                publish.append(self.next(event, record))
        if answered:  # a trade its record's consumer did not move (it died in between)
            await catch_up(answered, before=self.before)
        await self._publish.many(publish)
        for entry_id in events:
            outcomes.setdefault(entry_id, None)

    async def _compute_missing(
        self, events: list[In], stored: dict[str, Rec], looked_up: set[str]
    ) -> tuple[dict[str, Exception], set[str]]:
        """Compute and insert the records of `events` into `stored`: the errors by trade id,
        and the trades whose record this batch stored."""
        if not events:
            return {}, set()
        made: list[Rec | BaseException]
        if len(events) == 1:  # no task for one trade: its hop skips two turns of the loop
            try:
                made = [await self._compute_one(events[0])]
            except Exception as exc:
                made = [exc]
        else:
            made = await asyncio.gather(
                *(self._compute_one(e) for e in events), return_exceptions=True
            )
        failed: dict[str, Exception] = {}
        new: list[Rec] = []
        for event, result in zip(events, made, strict=True):
            if isinstance(result, Exception):
                failed[event.trade_id] = result
            elif isinstance(result, BaseException):
                raise result  # cancelled: the whole batch stays pending
            else:
                new.append(result)
        unseen = set(failed) - looked_up
        if unseen:  # a record stored before (e.g. the reply to its commit was lost) answers
            found = await self._load(unseen)
            stored.update(found)
            for trade_id in found:
                del failed[trade_id]
        written = await self._insert(new, stored, failed, events) if new else set()
        missing = [
            e.trade_id for e in events if e.trade_id not in stored and e.trade_id not in failed
        ]
        for trade_id in missing:  # not inserted and not there: the insert lost it
            failed[trade_id] = RuntimeError(f"{self.record.__name__} not stored for the trade")
        if failed:
            # The trade shows (requested) while its stage waits or retries.
            await ensure_trades(e for e in events if e.trade_id in failed)
        return failed, written

    async def _insert(
        self,
        new: list[Rec],
        stored: dict[str, Rec],
        failed: dict[str, Exception],
        events: list[In],
    ) -> set[str]:
        """One INSERT of `new` (in trade order, so concurrent batches lock rows alike), each
        trade moved to its status in the same statement; a record another consumer stored
        first is read back and wins. A row the database refuses fails its own trade (into
        `failed`), not the batch. Returns the trades whose record went in."""
        new = sorted(new, key=lambda r: r.trade_id)  # type: ignore[attr-defined]
        by_trade = {e.trade_id: e for e in events}
        moves = {r.trade_id: self.move(r) for r in new}  # type: ignore[attr-defined]
        try:
            inserted = await store_records(
                new, (by_trade[t] for t in moves), moves, before=self.before
            )
        except Exception as exc:
            if len(new) == 1 or outage_reason(exc) is not None:
                raise
            inserted = set()
            for row in new:  # find the refused row: one statement each
                try:
                    trade_id = row.trade_id  # type: ignore[attr-defined]
                    inserted |= await store_records(
                        [row], [by_trade[trade_id]], {trade_id: moves[trade_id]}, before=self.before
                    )
                except Exception as one:
                    if outage_reason(one) is not None:
                        raise
                    failed[row.trade_id] = one  # type: ignore[attr-defined]
            new = [r for r in new if r.trade_id not in failed]  # type: ignore[attr-defined]
        stored.update((r.trade_id, r) for r in new if r.trade_id in inserted)  # type: ignore[attr-defined]
        theirs = {r.trade_id for r in new} - inserted  # type: ignore[attr-defined]
        if theirs:
            stored.update(await self._load(theirs))
        return inserted

    async def _compute_one(self, event: In) -> Rec:
        with logger.contextualize(trade_id=event.trade_id, stage=self.name):
            if self._compute_timeout_s is None:
                return await self.compute(event)
            async with asyncio.timeout(self._compute_timeout_s):
                return await self.compute(event)

    async def _load(self, trade_ids: set[str]) -> dict[str, Rec]:
        rows = await select_by(self.record, "trade_id", trade_ids)
        return {row.trade_id: row for row in rows}  # type: ignore[attr-defined]
