"""Cache hits of GET /api/v1/tao_dividends, answered in front of FastAPI's routing.

A cache hit should cost close to a bare endpoint, and FastAPI's dependency resolution costs
several times that. So this ASGI component (mounted by gateway.app inside the request-context
middleware) takes the requests whose query parses and whose answer this process holds in
memory (`DividendsCache.holds`), and serves them with the router's own steps:
`gateway.deps.admit` (token, read budget, scope), the query from `parse_query`, and
`gateway.dividends.answer`. A refusal on the way is answered by the app's error mapping.

Every other request (a refused query, an answer not in memory, another path or method) goes
on to FastAPI unchanged; nothing has been counted for it here. The query is parsed before the
token is checked, so the parser's memory of plain queries is bounded
(`gateway.dividends.query.MAX_REMEMBERED`).
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.deps import admit
from gateway.dividends.answer import answer
from gateway.dividends.query import DividendsQuery, parse_query
from gateway.dividends.router import PATH, router
from gateway.errors import app_error
from gateway.metrics import FASTPATH_HITS
from gateway.scopes import READ
from gateway.state import AppState
from shared.errors import AppError

_SCOPES = (READ,)  # the route's own (gateway.deps.ReaderDep)
_ROUTE = next(route for route in router.routes if getattr(route, "path", None) == PATH)


class DividendsFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        state: AppState | None = getattr(scope["app"].state, "services", None)
        query = _query(scope["query_string"])
        if (
            state is None
            or query is None
            or not state.dividends.cache.holds(query.netuid, query.hotkey)
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE  # what Starlette's routing would set (the metrics' route label)
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        client = scope.get("client")
        try:
            caller = await admit(state, authorization, client[0] if client else None, _SCOPES)
            body = await answer(state, caller, query, scope.get("state", {}).get("request_id", ""))
        except AppError as exc:
            response = await app_error(Request(scope), exc)
            await response(scope, receive, send)
            return
        FASTPATH_HITS.inc()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _query(raw: bytes) -> DividendsQuery | None:
    try:
        return parse_query(raw)
    except (RequestValidationError, AppError):
        return None  # the router answers the 422
