"""The app factory: the OpenAPI document states each route's scopes and the real error body of
a 403; the served app freezes its start-up heap."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import gateway.app
from gateway.app import create_app
from shared.settings import Settings
from tests.conftest import running_app
from tests.fakes.chain import FakeChain


async def _schema(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


async def test_every_api_route_lists_its_scopes(client: httpx.AsyncClient) -> None:
    schema = await _schema(client)
    paths = schema["paths"]
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert paths["/api/v1/tao_dividends"]["get"]["security"] == [{"bearerAuth": ["read"]}]
    assert paths["/api/v1/trades/{trade_id}"]["get"]["security"] == [{"bearerAuth": ["read"]}]
    assert paths["/api/v1/stake_actions"]["get"]["security"] == [{"bearerAuth": ["read"]}]
    assert paths["/api/v1/trades"]["post"]["security"] == [{"bearerAuth": ["trade"]}]
    assert "security" not in paths["/healthz"]["get"]
    dividends = paths["/api/v1/tao_dividends"]["get"]
    assert "`trade`" in dividends["description"]
    assert "admin" in paths["/api/v1/stake_actions"]["get"]["description"]


async def test_403_is_documented_with_the_error_schema(client: httpx.AsyncClient) -> None:
    schema = await _schema(client)
    for path, method in [
        ("/api/v1/tao_dividends", "get"),
        ("/api/v1/trades", "post"),
        ("/api/v1/trades/{trade_id}", "get"),
        ("/api/v1/stake_actions", "get"),
    ]:
        forbidden = schema["paths"][path][method]["responses"]["403"]
        assert "insufficient_scope" in forbidden["description"]
        ref = forbidden["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorBody"
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "request_id"}


async def test_the_served_app_freezes_its_heap_once_started(
    settings: Settings, chain: FakeChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def freeze() -> int:  # what was up when the heap was frozen: everything the lifespan starts
        services = getattr(app.state, "services", None)
        seen.append(services is not None and services.limiter._task is not None)
        return 1

    monkeypatch.setattr(gateway.app, "freeze_startup_heap", freeze)
    app = create_app(settings, chain=chain, freeze_heap=True)
    assert seen == []  # not while building: once the lifespan has started everything
    async with running_app(app) as client:
        assert seen == [True]
        assert (await client.get("/healthz")).status_code == 200
    async with running_app(create_app(settings, chain=chain)):  # the tests' apps freeze nothing
        assert seen == [True]
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(gateway.app, "create_app", lambda **kw: built.append(kw))
    gateway.app.serve_app()
    assert built == [{"freeze_heap": True}]
