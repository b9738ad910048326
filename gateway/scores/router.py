"""GET /api/v1/subnets/{netuid}/scores."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from gateway.deps import SS58_CONSTRAINTS, SS58_DESCRIPTION, SS58_EXAMPLE, ReaderDep, hotkey_param
from gateway.errors import documented
from gateway.headers import no_store
from gateway.scopes import ADMIN
from gateway.scores import service
from gateway.scores.schemas import ScorePage
from gateway.trades.router import COMMON_ERRORS, CURSOR_PATTERN, MAX_ROW_ID

router = APIRouter(prefix="/api/v1", tags=["scores"], dependencies=[Depends(no_store)])


@router.get(
    "/subnets/{netuid}/scores",
    response_model=ScorePage,
    summary="Sentiment score history of a subnet, newest first",
    description="Scope: `read`. Only the scores of the caller's own trades; every caller's "
    "with `admin` as well. A trade that found nothing to score has `score` null.",
    responses=documented({**COMMON_ERRORS, 403: "`insufficient_scope`: the token lacks `read`"}),
)
async def subnet_scores(
    netuid: Annotated[int, Path(ge=0, le=65535, description="Subnet id.", examples=[18])],
    caller: ReaderDep,
    hotkey: Annotated[
        str | None,
        Query(
            description=f"Only trades of this hotkey. {SS58_DESCRIPTION}",
            examples=[SS58_EXAMPLE],
            **SS58_CONSTRAINTS,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page (a decimal number); omit it for "
            "the first page.",
            examples=["1234"],
        ),
    ] = None,
) -> ScorePage:
    if hotkey is not None:
        hotkey = hotkey_param(hotkey)
    after = None if cursor is None else int(cursor)
    if after is not None and after > MAX_ROW_ID:
        after = None  # every row id is below it: the same page as no cursor
    return await service.list_scores(
        netuid,
        owner=None if ADMIN in caller.scopes else caller.owner,
        hotkey=hotkey,
        limit=limit,
        cursor=after,
    )
