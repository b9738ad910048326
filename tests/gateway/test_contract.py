"""The OpenAPI contract, checked by schemathesis against the gateway served over real HTTP.

uvicorn serves the real app (real Redis and PostgreSQL, the fake chain) on a free port in a
thread. For every operation of the app's OpenAPI document, schemathesis sends the schema's
examples, its coverage cases (boundaries, missing and wrong-typed values, undeclared methods)
and fuzzed requests, valid and invalid, with a token holding every scope. Each response goes
through all of schemathesis' default checks: no 5xx, documented status, content type, headers
and body, invalid data rejected, valid data accepted, auth enforced, 405 with `Allow`.

Valid SS58 addresses cannot be expressed in JSON Schema (the checksum): the schema names them
with the custom `format: ss58`, and this module registers a strategy that makes real ones.
The run is bounded and derandomized: the same requests every time, well under a minute.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tortoise import Tortoise

from gateway.app import create_app
from gateway.deps import SS58_FORMAT, SS58_PATTERN
from gateway.trades.schemas import TRADE_ID_EXAMPLE
from shared.db.config import tortoise_config
from shared.db.models import SentimentScore, StakeAction, Trade, TweetBatch
from shared.settings import Settings
from shared.ss58 import encode_ss58, is_valid_ss58
from tests.conftest import TABLES, free_port, make_settings
from tests.fakes.chain import ALICE, FakeChain

TOKEN = "contract-test-token-0123456789"  # every scope, so every operation is reachable
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = 300  # Hypothesis examples per operation in the fuzzing phase
# schemathesis' default statuses that reject invalid data (negative_data_rejection).
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]

_ss58_ok = re.compile(SS58_PATTERN).fullmatch
# Real addresses (valid checksum): the generic format 42 and two other network prefixes.
SS58_ADDRESSES = st.builds(
    encode_ss58, st.binary(min_size=32, max_size=32), st.sampled_from([42, 0, 2])
).filter(lambda address: _ss58_ok(address) is not None)
schemathesis.openapi.format(SS58_FORMAT, SS58_ADDRESSES)


@functools.cache
def real_ss58(like: str) -> str:
    """A valid address as long as `like`, derived from it (the same one every run)."""
    for attempt in itertools.count():
        digest = hashlib.sha256(f"{like}:{attempt}".encode()).digest()
        for ss58_format, account in ((42, digest), (0, digest), (0, b"\0" + digest[:31])):
            address = encode_ss58(account, ss58_format)
            if len(address) == len(like):
                return address
    raise AssertionError("unreachable")


def give_real_checksums(case: schemathesis.Case) -> None:
    """Turn a hotkey that matches the schema's pattern but fails the SS58 checksum into a real
    address of the same length.

    The fuzzing phase draws hotkeys from the `ss58` format above, but the coverage phase
    builds its boundary values (46, 47 and 48 characters) from the pattern alone, and no
    regex carries a checksum. Only such values are changed: a hotkey that violates the
    pattern (the negative cases) is sent as generated and must be refused.
    """
    for values in (case.query, case.body):
        if isinstance(values, dict):
            hotkey = values.get("hotkey")
            if isinstance(hotkey, str) and _ss58_ok(hotkey) and not is_valid_ss58(hotkey):
                values["hotkey"] = real_ss58(hotkey)


class RequestCounter:
    """Counts the HTTP requests that reach the server (schemathesis' own probes included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answers: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.seconds: list[float] = []  # the gateway's own time per request

    @property
    def requests(self) -> int:
        return self.answers.total()

    def statuses(self) -> dict[int, int]:
        totals: collections.Counter[int] = collections.Counter()
        for (_, _, status), count in self.answers.items():
            totals[status] += count
        return dict(sorted(totals.items()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers[(scope["method"], scope["path"], message["status"])] += 1
            await send(message)

        began = time.monotonic()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.seconds.append(time.monotonic() - began)


@dataclass
class Gateway:
    url: str
    counter: RequestCounter
    fuzzed: bool = False  # the schemathesis test ran against this gateway


async def _prepare(settings: Settings, database_url: str, redis_url: str) -> None:
    """Empty tables and Redis, then one finished trade at the id the schema gives as example,
    so GET /trades/{trade_id} and /stake_actions answer 200 with every nested record."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    finally:
        await conn.close()
    with Redis.from_url(redis_url) as redis:
        redis.flushdb()
    await Tortoise.init(config=tortoise_config(settings))
    try:
        trade = await Trade.create(
            trade_id=TRADE_ID_EXAMPLE, netuid=18, hotkey=ALICE, source="api", status="succeeded"
        )
        await TweetBatch.create(
            trade=trade, source="datura", query="bittensor", count=1, tweets=[{"text": "up"}]
        )
        await SentimentScore.create(trade=trade, netuid=18, score=42, backend="vader")
        await StakeAction.create(
            trade=trade,
            netuid=18,
            hotkey=ALICE,
            direction="add",
            status="succeeded",
            score=42,
            amount_tao=Decimal("0.042000000"),
            success=True,
            block=1000,
            fee_rao=12345,
        )
    finally:
        await Tortoise.close_connections()


@pytest.fixture(scope="module")
def gateway(redis_url: str, database_url: str) -> Iterator[Gateway]:
    settings = make_settings(
        redis_url,
        database_url,
        api_tokens=SecretStr(f"{TOKEN}:read+trade+admin"),
        # schemathesis probes each operation without and with a wrong token on purpose.
        auth_failures_per_min=1_000_000,
    )
    asyncio.run(_prepare(settings, database_url, redis_url))
    counter = RequestCounter(create_app(settings, chain=FakeChain()))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(counter, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="contract-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the gateway did not start")
        time.sleep(0.02)
    # The gateway shares this process with the test run: without this, a full collection
    # walks every object the tests before it left (over a second on a slow host, measured
    # with gc.callbacks) and is counted as the gateway's time. Frozen objects are not
    # collected; what the gateway and schemathesis allocate from here on still is.
    gc.collect()
    gc.freeze()
    try:
        yield Gateway(f"http://127.0.0.1:{port}", counter)
    finally:
        gc.unfreeze()
        server.should_exit = True
        thread.join(20)
        # `pytest -s` shows it: the figure quoted in docs/development.md.
        print(f"\ncontract: {counter.requests} requests, statuses {counter.statuses()}")


# The document the gateway serves at /openapi.json, built the same way without starting it (the
# tests below check that the served one says the same). The lazy `from_fixture` loader, which
# would fetch it from the running server, does not work with pytest 9 in schemathesis 4.32.5.
# The token goes in as the schema's `bearerAuth` credentials, not as a plain header: then
# schemathesis leaves it out of the cases that test a missing Authorization header.
schema = schemathesis.openapi.from_dict(
    create_app(make_settings("redis://127.0.0.1:1/0", "sqlite://:memory:")).openapi(),
    config=schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}},
            # A fuzzed query string can outgrow the 2 KiB bound: the gateway refuses it with the
            # documented 414 before reading any parameter, which is a rejection too.
            "checks": {"negative_data_rejection": {"expected-statuses": [*REJECTED, "414"]}},
        }
    ),
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_to_the_schema(case: schemathesis.Case, gateway: Gateway) -> None:
    gateway.fuzzed = True
    give_real_checksums(case)
    case.call_and_validate(base_url=gateway.url)


def test_the_run_was_real_and_bounded(gateway: Gateway) -> None:
    """Runs after the schemathesis test (file order): it sent requests, reached the seeded
    trade and every 200 path, none answered 5xx (not even /readyz: Redis, PostgreSQL and the
    chain are up), and the gateway answered each within a second (the run's wall time is
    mostly schemathesis generating cases, which depends on the machine, not the gateway)."""
    if not gateway.fuzzed:
        pytest.skip("the schemathesis test was not selected")
    counter = gateway.counter
    statuses = counter.statuses()
    assert counter.requests >= 1000, counter.requests
    assert not [status for status in statuses if status >= 500], statuses
    answered = {(method, path, status) for method, path, status in counter.answers}
    for method, path, status in [
        ("GET", f"/api/v1/trades/{TRADE_ID_EXAMPLE}", 200),
        ("GET", "/api/v1/stake_actions", 200),
        ("GET", "/api/v1/tao_dividends", 200),
        ("POST", "/api/v1/trades", 202),
        ("GET", "/api/v1/trades", 200),
        ("GET", "/api/v1/positions", 200),
        ("GET", "/api/v1/subnets/18/scores", 200),
        ("GET", "/api/v1/streams", 200),
        ("GET", "/readyz", 200),
        ("GET", "/healthz", 200),
    ]:
        assert (method, path, status) in answered, (method, path, status)
    slowest = sorted(counter.seconds)[-5:]
    assert slowest[-1] < 1.0, slowest
    assert sum(counter.seconds) < 30, sum(counter.seconds)


# ------------------------------------------------------------------ the schema itself
def _openapi(gateway: Gateway) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{gateway.url}/openapi.json").json()
    return document


def test_the_fuzzed_document_is_the_served_one(gateway: Gateway) -> None:
    assert schema.raw_schema == _openapi(gateway)


API = {
    ("/api/v1/tao_dividends", "get"): {"401", "403", "422", "429", "503", "504"},
    ("/api/v1/trades/{trade_id}", "get"): {"401", "403", "404", "422", "429", "503"},
    ("/api/v1/stake_actions", "get"): {"401", "403", "422", "429", "503"},
    ("/api/v1/trades", "post"): {"400", "401", "403", "413", "422", "429", "503"},
    ("/api/v1/trades", "get"): {"401", "403", "422", "429", "503"},
    ("/api/v1/positions", "get"): {"401", "403", "422", "429", "503"},
    ("/api/v1/subnets/{netuid}/scores", "get"): {"401", "403", "422", "429", "503"},
    ("/api/v1/streams", "get"): {"401", "403", "429", "503"},
}


def test_every_route_documents_its_errors_with_the_real_error_body(gateway: Gateway) -> None:
    document = _openapi(gateway)
    text = json.dumps(document)
    assert "HTTPValidationError" not in text and '"detail"' not in text
    for (path, method), statuses in API.items():
        responses = document["paths"][path][method]["responses"]
        assert statuses | {"414", "431"} <= set(responses), (path, sorted(responses))
        for status in statuses | {"414", "431"}:
            body = responses[status]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        assert responses["429"]["headers"]["Retry-After"]["required"] is True
    ready = document["paths"]["/readyz"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")


def test_constraints_are_in_the_schema(gateway: Gateway) -> None:
    document = _openapi(gateway)

    def query(path: str) -> dict[str, dict[str, Any]]:
        parameters = document["paths"][path]["get"]["parameters"]
        return {p["name"]: p["schema"] for p in parameters}

    dividends, actions = query("/api/v1/tao_dividends"), query("/api/v1/stake_actions")
    body = document["components"]["schemas"]["TradeRequest"]["properties"]
    for hotkey in (dividends["hotkey"], actions["hotkey"], body["hotkey"]):
        assert hotkey["type"] == "string" and hotkey["format"] == "ss58"
        assert (hotkey["minLength"], hotkey["maxLength"]) == (46, 48)
        assert hotkey["pattern"] == "^[1-9A-HJ-NP-Za-km-z]{46,48}$"
    for netuid in (dividends["netuid"], actions["netuid"], body["netuid"]):
        assert (netuid["type"], netuid["minimum"], netuid["maximum"]) == ("integer", 0, 65535)
    assert actions["cursor"] == {**actions["cursor"], "type": "string", "pattern": "^[0-9]{1,10}$"}
    assert (actions["limit"]["minimum"], actions["limit"]["maximum"]) == (1, 200)
    assert "rejected" in actions["status"]["enum"] and actions["direction"]["enum"] == [
        "add",
        "remove",
        "none",
    ]
    trade_id = document["paths"]["/api/v1/trades/{trade_id}"]["get"]["parameters"][0]
    assert trade_id["schema"]["pattern"] == "^[0-9A-Za-z_-]{1,32}$"
    # A query string cannot carry null: optional parameters are documented as their type.
    assert "anyOf" not in json.dumps(dividends) + json.dumps(actions)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/tao_dividends", "GET"),
        ("PUT", "/api/v1/trades", "GET, POST"),
        ("DELETE", "/api/v1/positions", "GET"),
        ("POST", "/api/v1/trades/abc", "GET"),
        ("PATCH", "/api/v1/stake_actions", "GET"),
        ("TRACE", "/healthz", "GET"),
    ],
)
def test_405_carries_allow_and_the_error_body(
    gateway: Gateway, method: str, path: str, allow: str
) -> None:
    response = httpx.request(method, f"{gateway.url}{path}", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"cursor": "9999999999"}, 200),  # beyond every row id: the first page, not a 503
        ({"cursor": "12a"}, 422),
        ({"hotkey": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ"}, 422),  # checksum
        ({"hotkey": "0" * 48}, 422),  # not base58
    ],
)
def test_stake_action_filters_answer_what_the_schema_says(
    gateway: Gateway, params: dict[str, str], status: int
) -> None:
    response = httpx.get(f"{gateway.url}/api/v1/stake_actions", params=params, headers=AUTH)
    assert response.status_code == status, response.text


def test_a_trade_id_outside_the_pattern_is_422_not_a_database_error(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/api/v1/trades/a%00b", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
