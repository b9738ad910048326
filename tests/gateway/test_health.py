"""/healthz, /readyz, /metrics and the OpenAPI documents."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import health
from tests.conftest import AUTH
from tests.fakes.chain import FakeChain


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_checks_redis_db_and_chain(
    client: httpx.AsyncClient, chain: FakeChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_CHAIN_EVERY_S", 0.0)  # every call reads the chain
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


async def test_concurrent_readyz_calls_share_one_chain_read(
    client: httpx.AsyncClient, chain: FakeChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "At most once a second" held only for calls one after another: 30 at once made 30."""
    status = chain.status

    async def slow_status() -> object:
        await asyncio.sleep(0.05)  # a real node answers in milliseconds, not at once
        return await status()

    monkeypatch.setattr(chain, "status", slow_status)
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(30)))
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["checks"]["chain"]["block"] for answer in answers} == {1000}
    assert chain.calls["status"] == 1
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(10)))
    assert chain.calls["status"] == 1  # still within the second


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_count_requests_cache_and_chain_reads(
    client: httpx.AsyncClient, chain: FakeChain
) -> None:
    """Counters are process-wide, so the test asserts what its own requests added."""
    requests = (
        "taostake_http_requests_total",
        (("method", "GET"), ("route", "/api/v1/tao_dividends"), ("status", "200")),
    )
    memory_hits = ("taostake_cache_lookups_total", (("result", "memory"),))
    chain_reads = ("taostake_chain_reads_total", (("kind", "subnet"), ("outcome", "ok")))
    latency = (
        "taostake_http_request_duration_seconds_count",
        (("route", "/api/v1/tao_dividends"),),
    )
    before = _samples((await client.get("/metrics")).text)
    params = {"netuid": 3, "trade": "false"}
    for _ in range(3):
        response = await client.get("/api/v1/tao_dividends", params=params, headers=AUTH)
        assert response.status_code == 200
    after = _samples((await client.get("/metrics")).text)

    def delta(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(requests) == 3
    assert delta(chain_reads) == 1  # the first request read the chain, the others hit the cache
    assert delta(memory_hits) == 2
    assert chain.reads == 1
    assert delta(latency) == 3


async def test_openapi_documents_bearer_auth_and_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    operation = spec["paths"]["/api/v1/tao_dividends"]["get"]
    assert operation["security"] == [{"bearerAuth": ["read"]}]
    assert {"401", "422", "429", "503", "504"} <= set(operation["responses"])
    assert "examples" in spec["components"]["schemas"]["DividendResponse"]
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200
