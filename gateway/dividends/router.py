"""GET /api/v1/tao_dividends through FastAPI: the requests the fast path leaves (answers not
in memory, refused queries) and the route's OpenAPI description."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from gateway.deps import ReaderDep, RequestIdDep, StateDep
from gateway.dividends.answer import answer
from gateway.dividends.query import DividendsQuery, openapi_parameters, parse_query
from gateway.dividends.schemas import DividendCollectionResponse, DividendResponse
from gateway.errors import documented

PATH = "/api/v1/tao_dividends"
router = APIRouter(tags=["dividends"])

ERROR_RESPONSES = documented(
    {
        401: "`unauthorized`: missing, malformed, unknown or revoked token",
        403: "`insufficient_scope`: the token lacks `read`, or `trade` with `trade=true`",
        422: "`validation_error`: invalid netuid, hotkey or trade (the message names it)",
        429: "`rate_limited`: the token's rate limit (or the trade limit with a trade), or too "
        "many failed authentications from this address; see Retry-After",
        503: "`redis_unavailable`, `chain_unavailable`, `storage_unsupported` or "
        "`database_unavailable` (token store): a dependency cannot answer; `auth_busy`: too "
        "many token checks in progress (see Retry-After)",
        504: "`chain_timeout`: the chain did not answer in time",
    }
)


async def dividends_query(request: Request) -> DividendsQuery:
    return parse_query(request.scope["query_string"])


# Declared after the caller: as with FastAPI's own parameters, a bad token answers before a
# bad query.
QueryDep = Annotated[DividendsQuery, Depends(dividends_query)]


@router.get(
    PATH,
    response_model=DividendResponse | DividendCollectionResponse,
    responses=ERROR_RESPONSES,
    summary="Tao dividends for a subnet and hotkey (both optional)",
    description="Scopes: `read`; `trade` too to enqueue a trade. Without `trade`, "
    "`trade=true` answers 403 `insufficient_scope` and an omitted `trade` never trades.",
    openapi_extra={"parameters": openapi_parameters()},
)
async def tao_dividends(
    state: StateDep, caller: ReaderDep, request_id: RequestIdDep, query: QueryDep
) -> Response:
    body = await answer(state, caller, query, request_id)
    return Response(body, media_type="application/json")
