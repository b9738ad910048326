"""The authenticator: callers carry scopes and owner; a remembered bad token stays bad."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.state import AppState
from gateway.tokens import create_token
from shared.errors import Unauthorized
from shared.settings import Settings
from tests.conftest import TOKENS, running_app
from tests.fakes.chain import FakeChain
from tests.gateway.conftest import bearer, owner

URL = "/api/v1/tao_dividends"
CACHED = {"netuid": "3", "trade": "false"}


async def test_a_remembered_bad_token_is_never_known_to_the_fast_path(
    settings: Settings, chain: FakeChain
) -> None:
    app = create_app(settings, chain=chain)
    async with running_app(app) as client:
        state: AppState = app.state.services
        assert (await client.get(URL, params=CACHED, headers=bearer(TOKENS[0]))).status_code == 200
        bad = bearer("tsk_not-a-token")
        first = await client.get(URL, params=CACHED, headers=bad)
        with pytest.raises(Unauthorized):  # remembered as bad, never taken for a valid one
            await state.auth.authenticate(bad["Authorization"])
        second = await client.get(URL, params=CACHED, headers=bad)
        assert first.status_code == second.status_code == 401
        assert second.json()["error"]["code"] == "unauthorized"


async def test_callers_carry_owner_and_scopes(settings: Settings, chain: FakeChain) -> None:
    app = create_app(settings, chain=chain)
    async with running_app(app) as client:
        state: AppState = app.state.services
        token = await create_token("dash", frozenset({"read", "admin"}))
        assert (await client.get(URL, params=CACHED, headers=bearer(token))).status_code == 200
        stored = await state.auth.authenticate(f"Bearer {token}")
        assert (stored.owner, stored.scopes) == ("dash", frozenset({"read", "admin"}))
        static = await state.auth.authenticate(f"Bearer {TOKENS[1]}")
        assert (static.owner, static.scopes) == (owner(TOKENS[1]), frozenset({"read", "trade"}))


async def test_a_stored_row_with_unusable_scopes_grants_nothing(
    client: httpx.AsyncClient,
) -> None:
    from shared.db.models import ApiToken

    token = await create_token("odd")
    await ApiToken.filter(name="odd").update(scopes="read,superuser")
    response = await client.get(URL, params=CACHED, headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
