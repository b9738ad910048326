"""FastAPI dependencies, declared once as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from gateway.limits import client_key
from gateway.scopes import READ, TRADE, Caller
from gateway.state import AppState
from shared.errors import InvalidInput
from shared.ss58 import normalize_ss58


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.services
    return state


StateDep = Annotated[AppState, Depends(get_state)]


class BearerScheme(SecurityBase):
    """Hands the raw header to gateway.auth (which owns the 401 messages) and, being a
    security scheme, makes OpenAPI list each route's required scopes from its dependency."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="A token from API_TOKENS or `python -m gateway tokens create`. "
            "Scopes: `read` (dividends, own trades), `trade` (enqueue trades), "
            "`admin` (every caller's trades)."
        )
        self.scheme_name = "bearerAuth"

    async def __call__(self, request: Request) -> str | None:
        return request.headers.get("authorization")


bearer = BearerScheme()


async def admit(
    state: AppState, authorization: str | None, host: str | None, scopes: Iterable[str]
) -> Caller:
    """The caller of an authenticated request, counted against its read budget and checked
    for `scopes`: 401, 429 (auth throttle or rate limit), 403 or 503 otherwise.

    The one admission rule: every route's dependency and the dividends fast path call it.
    A known-valid token passes without I/O; only an unknown one meets the failed-auth
    throttle for the client's address (gateway.auth)."""
    caller = await state.auth.authenticate(authorization, client=client_key(host))
    state.limiter.hit(caller.owner, "read", state.settings.rate_limit_per_min)
    for scope in scopes:
        caller.require(scope)
    return caller


async def get_caller(
    security_scopes: SecurityScopes,
    request: Request,
    state: StateDep,
    authorization: Annotated[str | None, Depends(bearer)],
) -> Caller:
    host = request.client.host if request.client is not None else None
    return await admit(state, authorization, host, security_scopes.scopes)


ReaderDep = Annotated[Caller, Security(get_caller, scopes=[READ])]
TraderDep = Annotated[Caller, Security(get_caller, scopes=[TRADE])]


async def request_id(request: Request) -> str:
    rid: str = request.scope.get("state", {}).get("request_id", "")
    return rid


RequestIdDep = Annotated[str, Depends(request_id)]


# What OpenAPI can say about an SS58 address: base58 alphabet (no 0, O, I, l) and length.
# The checksum it cannot express is named by the custom `format: ss58`; a value that
# matches the pattern but fails the checksum answers 422 from `hotkey_param`.
SS58_PATTERN = "^[1-9A-HJ-NP-Za-km-z]{46,48}$"
SS58_MIN_LENGTH = 46
SS58_MAX_LENGTH = 48
SS58_FORMAT = "ss58"
SS58_EXAMPLE = "5FFApaS75bv5pJHfAp2FVLBj9ZaXuFDjEypsaBNc1wCfe52v"
SS58_DESCRIPTION = (
    "SS58 address: 46–48 base58 characters with a valid checksum, any network prefix "
    "(answers use the generic format 42)."
)
SS58_CONSTRAINTS: dict[str, Any] = {
    "min_length": SS58_MIN_LENGTH,
    "max_length": SS58_MAX_LENGTH,
    "pattern": SS58_PATTERN,
    "json_schema_extra": {"format": SS58_FORMAT},
}


def hotkey_param(value: str) -> str:
    """A hotkey query/body value, checked and normalized to SS58 format 42."""
    try:
        return normalize_ss58(value)
    except ValueError as exc:
        raise InvalidInput(
            "hotkey: not a valid SS58 address (bad characters, length or checksum)"
        ) from exc
