"""Outside-API attempts and failures, counted per service through the HTTP client's observer."""

from __future__ import annotations

import aiohttp
import pytest

from pipeline.clients.http import ExternalAPIError, RetryPolicy, request_json
from pipeline.metrics.api import install_http_metrics
from tests.fakes import Reply
from tests.fakes.datura import FakeDatura
from tests.pipeline.conftest import DATURA_KEY


async def test_outside_api_attempts_and_failures_by_service() -> None:
    from prometheus_client import REGISTRY

    install_http_metrics()

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    names = (
        ("taostake_external_requests_total", {"outcome": "ok"}),
        ("taostake_external_requests_total", {"outcome": "http_5xx"}),
        ("taostake_external_requests_total", {"outcome": "http_4xx"}),
        ("taostake_external_requests_total", {"outcome": "timeout"}),
        ("taostake_external_request_failures_total", {"error": "external_auth_error"}),
        ("taostake_external_request_failures_total", {"error": "external_api_error"}),
        ("taostake_external_request_duration_seconds_count", {}),
    )
    before = [sample(n, service="datura", **labels) for n, labels in names]
    async with FakeDatura(api_key=DATURA_KEY) as datura, aiohttp.ClientSession() as session:

        async def call(timeout_s: float = 2.0, retries: int = 1) -> None:
            await request_json(
                session,
                "GET",
                f"{datura.base_url}/twitter",
                service="datura",
                timeout_s=timeout_s,
                policy=RetryPolicy(max_retries=retries, backoff_base_s=0.01, backoff_max_s=0.01),
                headers={"Authorization": DATURA_KEY},
                params={"query": "Netuid 3", "count": "5"},
            )

        datura.script(Reply(status=503), Reply())
        await call()  # 503, then 200
        datura.script(Reply(status=401, check_auth=False))
        with pytest.raises(ExternalAPIError):
            await call()  # not retried
        datura.script(Reply(delay_s=1.0))
        with pytest.raises(ExternalAPIError):
            await call(timeout_s=0.2, retries=0)  # timed out, retries spent
    after = [sample(n, service="datura", **labels) for n, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 1, 1, 4]
