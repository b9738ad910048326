"""/healthz, /readyz, /metrics and the OpenAPI documents."""

from __future__ import annotations

import httpx

from tests.conftest import AUTH
from tests.fakes.chain import FakeChain


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_checks_redis_db_and_chain(
    client: httpx.AsyncClient, chain: FakeChain
) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["redis"]["ok"] and checks["database"]["ok"] and checks["chain"]["ok"]
    assert checks["chain"]["block"] == 1000
    chain.stalled = True
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["chain"]["ok"] is False
    assert not_ready.json()["checks"]["redis"]["ok"] is True


async def test_metrics_count_requests_cache_and_chain_reads(client: httpx.AsyncClient) -> None:
    params = {"netuid": 3, "trade": "false"}
    await client.get("/api/v1/tao_dividends", params=params, headers=AUTH)
    await client.get("/api/v1/tao_dividends", params=params, headers=AUTH)
    text = (await client.get("/metrics")).text
    assert (
        'taostake_http_requests_total{method="GET",route="/api/v1/tao_dividends",status="200"}'
        in text
    )
    assert 'taostake_cache_lookups_total{result="memory"}' in text
    assert 'taostake_chain_reads_total{kind="subnet",outcome="ok"}' in text
    assert "taostake_http_request_duration_seconds_bucket" in text


async def test_openapi_documents_bearer_auth_and_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    operation = spec["paths"]["/api/v1/tao_dividends"]["get"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"401", "422", "429", "503", "504"} <= set(operation["responses"])
    assert "examples" in spec["components"]["schemas"]["DividendResponse"]
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200
