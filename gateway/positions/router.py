"""GET /api/v1/positions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from gateway.deps import (
    SS58_CONSTRAINTS,
    SS58_DESCRIPTION,
    SS58_EXAMPLE,
    ReaderDep,
    StateDep,
    hotkey_param,
)
from gateway.errors import documented
from gateway.headers import no_store
from gateway.positions import service
from gateway.positions.schemas import PositionPage
from gateway.scopes import ADMIN
from gateway.trades.router import COMMON_ERRORS, CURSOR_PATTERN, MAX_ROW_ID, OWN_TRADES

router = APIRouter(prefix="/api/v1", tags=["positions"], dependencies=[Depends(no_store)])


@router.get(
    "/positions",
    response_model=PositionPage,
    summary="Stake held per (netuid, hotkey), with its history",
    description=OWN_TRADES
    + " Totals come from the stored stake actions of those trades (only `succeeded` ones moved "
    "stake); `chain_stake_alpha` is what the acting coldkeys hold now, read from the chain "
    "within CHAIN_TIMEOUT_S (`chain` says whether it was read, and why not). A chain that "
    "cannot answer does not fail the request.",
    responses=documented({**COMMON_ERRORS, 403: "`insufficient_scope`: the token lacks `read`"}),
)
async def positions(
    caller: ReaderDep,
    state: StateDep,
    netuid: Annotated[int | None, Query(ge=0, le=65535, description="Subnet id.")] = None,
    hotkey: Annotated[
        str | None,
        Query(
            description=f"Hotkey. {SS58_DESCRIPTION}", examples=[SS58_EXAMPLE], **SS58_CONSTRAINTS
        ),
    ] = None,
    history: Annotated[
        int, Query(ge=0, le=100, description="Succeeded actions listed per position.")
    ] = 20,
    chain: Annotated[
        bool, Query(description="Read the current stake from the chain (one call per coldkey).")
    ] = True,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page (a decimal number); omit it for "
            "the first page.",
            examples=["1234"],
        ),
    ] = None,
) -> PositionPage:
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    after = None if cursor is None else int(cursor)
    if after is not None and after > MAX_ROW_ID:
        after = None  # every row id is below it: the same page as no cursor
    return await service.list_positions(
        owner=None if ADMIN in caller.scopes else caller.owner,
        netuid=netuid,
        hotkey=hotkey,
        history=history,
        limit=limit,
        cursor=after,
        chain=state.chain if chain else None,
        chain_timeout_s=state.settings.chain_timeout_s,
    )
