"""FastAPI dependencies, declared once as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.auth import Caller
from gateway.state import AppState
from shared.errors import InvalidInput
from shared.ss58 import normalize_ss58


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.services
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_caller(
    state: StateDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    caller = await state.auth.authenticate(authorization)
    state.limiter.hit(caller.token_hash[:16], "read", state.settings.rate_limit_per_min)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def request_id(request: Request) -> str:
    rid: str = request.scope.get("state", {}).get("request_id", "")
    return rid


RequestIdDep = Annotated[str, Depends(request_id)]


def hotkey_param(value: str) -> str:
    """A hotkey query/body value, checked and normalized to SS58 format 42."""
    try:
        return normalize_ss58(value)
    except ValueError as exc:
        raise InvalidInput(
            "hotkey: not a valid SS58 address (bad characters, length or checksum)"
        ) from exc
