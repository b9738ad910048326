"""GET /api/v1/positions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from gateway.deps import StateDep
from gateway.headers import no_store
from gateway.listing import OWN_TRADES, READ_ERRORS, IdListingDep
from gateway.positions import service
from gateway.positions.schemas import PositionPage

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
    responses=READ_ERRORS,
)
async def positions(
    page: IdListingDep,
    state: StateDep,
    history: Annotated[
        int, Query(ge=0, le=100, description="Succeeded actions listed per position.")
    ] = 20,
    chain: Annotated[
        bool, Query(description="Read the current stake from the chain (one call per coldkey).")
    ] = True,
) -> PositionPage:
    return await service.list_positions(
        page,
        history=history,
        chain=state.chain if chain else None,
        chain_timeout_s=state.settings.chain_timeout_s,
    )
