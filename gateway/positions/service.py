"""Positions derived from the stored stake actions, with the current stake from the chain.

Records say what this service moved (succeeded actions only: an action whose outcome is not
yet known on chain moves nothing here); the chain says what the wallet holds now. Both are
reported, under names that say which is which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tortoise.functions import Count, Max, Sum
from tortoise.queryset import QuerySet

from gateway.db import guarded
from gateway.errors import public_message
from gateway.listing import Listing
from gateway.positions.schemas import (
    ChainRead,
    ChainStake,
    HistoryPoint,
    PositionAction,
    PositionOut,
    PositionPage,
)
from shared.chain import StakeReader, StakeSnapshot
from shared.db.models import StakeAction
from shared.errors import ChainError

SUCCEEDED = "succeeded"
NANO = Decimal("0.000000001")
MAX_CHAIN_COLDKEYS = 8  # one runtime call each; more than this on one page is not "cheap"
HISTORY_CONCURRENCY = 4  # history queries of one page in flight at once
BACKSTOP_S = 0.5


def _dec(value: Any) -> Decimal:
    return (Decimal(0) if value is None else Decimal(str(value))).quantize(NANO)


def _alpha(rao: int) -> Decimal:
    return (Decimal(rao) / 1_000_000_000).quantize(NANO)


@dataclass(slots=True)
class _Totals:
    netuid: int
    hotkey: str
    actions: int = 0
    succeeded: int = 0
    tao_staked: Decimal = Decimal(0)
    alpha_unstaked: Decimal = Decimal(0)
    tao_unstaked: Decimal = Decimal(0)
    fees_rao: int = 0
    last_id: int = 0
    coldkeys: set[str] = field(default_factory=set)

    @property
    def net(self) -> Decimal:
        return (self.tao_staked - self.tao_unstaked).quantize(NANO)


_GROUPED = (
    "netuid",
    "hotkey",
    "direction",
    "status",
    "coldkey",
    "n",
    "tao",
    "alpha",
    "fees",
    "last_id",
)


async def _totals(query: QuerySet[StakeAction]) -> list[_Totals]:
    """One grouped query: counts and sums per (netuid, hotkey, direction, status, coldkey)."""
    groups = await guarded(
        query.annotate(
            n=Count("id"),
            tao=Sum("amount_tao"),
            alpha=Sum("amount_alpha"),
            fees=Sum("fee_rao"),
            last_id=Max("id"),
        )
        .group_by("netuid", "hotkey", "direction", "status", "coldkey")
        .values(*_GROUPED)
    )
    totals: dict[tuple[int, str], _Totals] = {}
    for group in groups:
        key = (int(group["netuid"]), str(group["hotkey"]))
        entry = totals.setdefault(key, _Totals(*key))
        count = int(group["n"])
        entry.actions += count
        entry.fees_rao += int(group["fees"] or 0)
        entry.last_id = max(entry.last_id, int(group["last_id"]))
        if group["coldkey"]:
            entry.coldkeys.add(str(group["coldkey"]))
        if group["status"] != SUCCEEDED:
            continue
        entry.succeeded += count
        if group["direction"] == "add":
            entry.tao_staked += _dec(group["tao"])
        elif group["direction"] == "remove":
            entry.alpha_unstaked += _dec(group["alpha"])
            entry.tao_unstaked += _dec(group["tao"])
    return sorted(totals.values(), key=lambda t: t.last_id, reverse=True)


def _action(row: StakeAction) -> dict[str, Any]:
    return {
        "trade_id": row.trade_id,
        "direction": row.direction,
        "status": row.status,
        "reason": row.reason,
        "amount_tao": None if row.amount_tao is None else _dec(row.amount_tao),
        "amount_alpha": None if row.amount_alpha is None else _dec(row.amount_alpha),
        "extrinsic_hash": row.extrinsic_hash,
        "block": row.block,
        "fee_rao": row.fee_rao,
        "created_at": row.created_at,
        "chain_stake_before_alpha": (
            None if row.stake_before_rao is None else _alpha(row.stake_before_rao)
        ),
    }


def _delta(row: StakeAction) -> Decimal:
    """What the action added to `net_staked_tao` (succeeded rows only reach here)."""
    signs = {"add": 1, "remove": -1}
    return _dec(row.amount_tao) * signs.get(row.direction, 0)


async def _history(
    query: QuerySet[StakeAction], totals: _Totals, limit: int, gate: asyncio.Semaphore
) -> list[HistoryPoint]:
    if limit == 0:
        return []
    async with gate:
        rows = await guarded(
            query.filter(netuid=totals.netuid, hotkey=totals.hotkey, status=SUCCEEDED)
            .order_by("-id")
            .limit(limit)
        )
    points, after = [], totals.net
    for row in rows:  # newest first: walk the running total backwards
        points.append(HistoryPoint(**_action(row), net_staked_tao_after=after))
        after = (after - _delta(row)).quantize(NANO)
    return points


async def _chain_stakes(
    chain: object | None, coldkeys: set[str], timeout_s: float
) -> tuple[ChainRead, StakeSnapshot | None]:
    if chain is None:
        return ChainRead(status="not_requested"), None
    if not coldkeys:
        return ChainRead(status="no_coldkey", message="no recorded action names a coldkey"), None
    if not isinstance(chain, StakeReader):
        return (
            ChainRead(status="unsupported", message="this chain client cannot read stakes"),
            None,
        )
    if len(coldkeys) > MAX_CHAIN_COLDKEYS:
        detail = (
            f"{len(coldkeys)} coldkeys on this page (at most {MAX_CHAIN_COLDKEYS} are read): "
            "filter by netuid or hotkey, or ask for a smaller page"
        )
        return ChainRead(status="too_many_coldkeys", message=detail), None
    try:
        # The client bounds its own calls by CHAIN_TIMEOUT_S; this is the backstop for one
        # that does not (a read that outlives it is cancelled, never awaited by the request).
        async with asyncio.timeout(timeout_s + BACKSTOP_S):
            snapshot = await chain.coldkey_stakes(sorted(coldkeys))
    except TimeoutError:
        return (
            ChainRead(
                status="error",
                error_code="chain_timeout",
                message=f"no answer within {timeout_s + BACKSTOP_S:g}s",
            ),
            None,
        )
    except ChainError as exc:
        return ChainRead(status="error", error_code=exc.code, message=public_message(exc)), None
    return ChainRead(status="ok", block=snapshot.block), snapshot


def _held(
    snapshot: StakeSnapshot | None, totals: _Totals
) -> tuple[Decimal | None, list[ChainStake]]:
    if snapshot is None:
        return None, []
    found = {
        entry.coldkey: entry.stake_rao
        for entry in snapshot.entries
        if entry.netuid == totals.netuid and entry.hotkey == totals.hotkey
    }
    stakes = [
        ChainStake(coldkey=c, stake_alpha=_alpha(found.get(c, 0)), stake_rao=found.get(c, 0))
        for c in sorted(totals.coldkeys)
    ]
    return _alpha(sum(s.stake_rao for s in stakes)), stakes


async def list_positions(
    listing: Listing[int],
    *,
    history: int,
    chain: object | None,
    chain_timeout_s: float,
) -> PositionPage:
    """A page of positions, most recently active first; the cursor is the id of the latest
    action of the last position of the previous page. `chain` None: no chain read."""
    query = listing.scoped(StakeAction.all())
    every = await _totals(query)
    below = listing.cursor
    if below is not None:
        every = [t for t in every if t.last_id < below]
    page, next_cursor = listing.cut(every, lambda t: str(t.last_id))
    gate = asyncio.Semaphore(HISTORY_CONCURRENCY)
    last_rows, histories, (chain_read, snapshot) = await asyncio.gather(
        _last_actions(t.last_id for t in page),
        asyncio.gather(*(_history(query, t, history, gate) for t in page)),
        _chain_stakes(chain, {c for t in page for c in t.coldkeys}, chain_timeout_s),
    )
    positions = []
    for totals, points in zip(page, histories, strict=True):
        held, per_coldkey = _held(snapshot, totals)
        positions.append(
            PositionOut(
                netuid=totals.netuid,
                hotkey=totals.hotkey,
                actions=totals.actions,
                succeeded=totals.succeeded,
                tao_staked=totals.tao_staked.quantize(NANO),
                alpha_unstaked=totals.alpha_unstaked.quantize(NANO),
                tao_unstaked_at_decision=totals.tao_unstaked.quantize(NANO),
                net_staked_tao=totals.net,
                fees_rao=totals.fees_rao,
                coldkeys=sorted(totals.coldkeys),
                last_action=PositionAction(**_action(last_rows[totals.last_id])),
                history=points,
                chain_stake_alpha=held,
                chain_stakes=per_coldkey,
            )
        )
    return PositionPage(positions=positions, next_cursor=next_cursor, chain=chain_read)


async def _last_actions(ids: Iterable[int]) -> dict[int, StakeAction]:
    wanted = list(ids)
    if not wanted:
        return {}
    rows = await guarded(StakeAction.filter(id__in=wanted))
    return {row.id: row for row in rows}
