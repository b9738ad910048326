"""GET /api/v1/subnets/{netuid}/scores."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from gateway.deps import ReaderDep
from gateway.headers import no_store
from gateway.listing import READ_ERRORS, IdCursorQuery, Listing, hotkey_query, id_cursor
from gateway.scores import service
from gateway.scores.schemas import ScorePage

router = APIRouter(prefix="/api/v1", tags=["scores"], dependencies=[Depends(no_store)])


@router.get(
    "/subnets/{netuid}/scores",
    response_model=ScorePage,
    summary="Sentiment score history of a subnet, newest first",
    description="Scope: `read`. Only the scores of the caller's own trades; every caller's "
    "with `admin` as well. A trade that found nothing to score has `score` null.",
    responses=READ_ERRORS,
)
async def subnet_scores(
    netuid: Annotated[int, Path(ge=0, le=65535, description="Subnet id.", examples=[18])],
    caller: ReaderDep,
    hotkey: Annotated[str | None, hotkey_query("Only trades of this hotkey.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
    cursor: IdCursorQuery = None,
) -> ScorePage:
    page = Listing.of(caller, hotkey=hotkey, limit=limit, cursor=id_cursor(cursor))
    return await service.list_scores(netuid, page)
