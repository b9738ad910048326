"""Request ids, access logs and the secrecy of credentials in logs."""

from __future__ import annotations

import httpx
from loguru import logger
from redis.asyncio import Redis

from gateway.app import create_app
from shared.settings import Settings
from tests.conftest import AUTH, TOKENS, make_settings, running_app
from tests.fakes.chain import ALICE, FakeChain


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await client.get("/healthz", headers={"X-Request-ID": "x" * 65})
    assert hostile.headers["x-request-id"] != "x" * 65


async def test_no_token_or_key_appears_in_logs(redis_url: str, clean_db: str, redis: Redis) -> None:
    settings = make_settings(
        redis_url,
        clean_db,
        log_level="DEBUG",
        log_format="json",
        datura_api_key="dt_secret_key_value_123",
        chutes_api_key="cpk_secret_value_456",
    )
    app = create_app(settings, chain=FakeChain())
    lines: list[str] = []
    logger.add(lines.append, level="DEBUG", format="{message} {extra}")
    async with running_app(app) as client:
        await client.get(
            "/api/v1/tao_dividends", params={"netuid": 3, "hotkey": ALICE}, headers=AUTH
        )
        await client.get("/api/v1/tao_dividends", headers={"Authorization": "Bearer guess-me-1"})
        logger.warning("outgoing call failed: Authorization: Bearer {}", TOKENS[1])
        logger.info(
            "config {}",
            settings.datura_api_key.get_secret_value(),  # type: ignore[union-attr]
        )
    text = "\n".join(lines)
    assert "/api/v1/tao_dividends" in text  # the access log was captured
    for secret in [*TOKENS, "guess-me-1", "dt_secret_key_value_123", "cpk_secret_value_456"]:
        assert secret not in text
    assert "***" in text


async def test_json_log_lines_are_json(settings: Settings) -> None:
    import orjson

    from shared.logging import configure_logging

    json_settings = settings.model_copy(update={"log_format": "json", "log_level": "INFO"})
    lines: list[str] = []
    configure_logging(json_settings, sink=lines.append)
    logger.bind(request_id="r1").info("hello {}", "world")
    record = orjson.loads(str(lines[-1]))
    assert record["msg"] == "hello world" and record["request_id"] == "r1"
    assert record["level"] == "INFO"


def test_exception_text_is_masked_in_text_logs(settings: Settings) -> None:
    from shared.logging import configure_logging, register_secrets

    text_settings = settings.model_copy(update={"log_format": "text", "log_level": "INFO"})
    lines: list[str] = []
    configure_logging(text_settings, sink=lines.append)
    register_secrets(["cpk_supersecret_123456"])
    try:
        raise RuntimeError("call failed: key cpk_supersecret_123456, Authorization: Bearer abcXYZ")
    except RuntimeError as exc:
        logger.opt(exception=exc).error("outgoing call failed")
    text = "".join(str(line) for line in lines)
    assert "RuntimeError" in text and "Traceback" in text
    assert "cpk_supersecret_123456" not in text and "abcXYZ" not in text


async def test_hostile_paths_are_logged_on_one_line_each(settings: Settings) -> None:
    """`%0A` used to forge a whole log line and `{...}` kept a request out of the access log."""
    from shared.logging import configure_logging

    text_settings = settings.model_copy(update={"log_format": "text", "log_level": "INFO"})
    lines: list[str] = []
    app = create_app(text_settings, chain=FakeChain())
    configure_logging(text_settings, sink=lines.append)  # after the app's own set-up
    forged = "/x%0A2026-01-01T00:00:00.000Z INFO    gateway GET /admin 200 0.1ms"
    async with running_app(app) as client:
        await client.get(forged)
        await client.get("/y%7Bfoo%7D")
        await client.get("/z%1B%5B31mred")
    access = [str(line) for line in lines if "404" in str(line)]
    assert len(access) == 3
    for line in access:
        assert line.count("\n") == 1 and line.endswith("\n")  # one record, one line
        assert "\x1b" not in line
    assert "/x\\n2026-01-01T00:00:00.000Z" in access[0]
    assert "/y{foo}" in access[1]
    assert "/z\\x1b[31mred" in access[2]


async def test_every_line_logged_while_serving_a_request_carries_its_id(
    settings: Settings,
) -> None:
    """Bound through context: a line logged deep in a service, by a stdlib logger or by a task
    the handler started carries the request's id, with no binding at the call site."""
    import asyncio
    import logging
    from typing import Any

    app = create_app(settings, chain=FakeChain())

    def service_layer() -> None:
        logger.info("deep service line")
        logging.getLogger("tortoise").warning("stdlib library line")

    async def in_a_task() -> None:
        logger.warning("task line")

    async def handler() -> dict[str, str]:
        service_layer()
        await asyncio.create_task(in_a_task())
        return {"ok": "yes"}

    app.add_api_route("/_test/deep", handler)
    records: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        record = message.record
        records.append({"msg": record["message"], "name": record["name"], **record["extra"]})

    sink_id = logger.add(sink, level="DEBUG")  # after create_app: it reconfigures logging
    try:
        async with running_app(app) as client:
            first = await client.get("/_test/deep", headers={"X-Request-ID": "req-one"})
            second = await client.get("/_test/deep")
        logger.info("after the requests")
    finally:
        logger.remove(sink_id)
    assert first.status_code == second.status_code == 200
    rid = second.headers["x-request-id"]
    by_id: dict[str | None, list[str]] = {}
    for record in records:
        by_id.setdefault(record.get("request_id"), []).append(record["msg"])
    for request_id in ("req-one", rid):
        lines = by_id[request_id]
        assert lines[:3] == ["deep service line", "stdlib library line", "task line"]
        assert lines[3].startswith("GET /_test/deep 200 ")  # the access line
    stdlib = next(r for r in records if r["msg"] == "stdlib library line")
    assert stdlib["name"] == "tortoise"
    # nothing logged outside a request carries an id
    assert "after the requests" in by_id[None]
    assert set(by_id) == {None, "req-one", rid}
