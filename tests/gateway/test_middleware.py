"""Request ids, access logs and the secrecy of credentials in logs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from loguru import logger
from redis.asyncio import Redis

from gateway.app import create_app
from shared.settings import Settings
from tests.conftest import AUTH, TOKENS, capture_json_records, make_settings, running_app
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
    from shared.logging import configure_logging

    app = create_app(settings, chain=FakeChain())
    lines: list[str] = []
    configure_logging(settings, sink=lines.append)  # after the app's own set-up
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
    text = "".join(str(line) for line in lines)
    assert text.count('"msg":"GET /api/v1/tao_dividends') == 2  # the access lines were captured
    for secret in [*TOKENS, "guess-me-1", "dt_secret_key_value_123", "cpk_secret_value_456"]:
        assert secret not in text
    assert "***" in text


async def test_no_credential_in_a_service_url_appears_in_logs(settings: Settings) -> None:
    """The chain URL's password and provider key, and a Redis password, are masked wherever
    they appear (the SDK prints the URL in its own errors), and the start line names the
    endpoint without them."""
    from shared.logging import configure_logging

    chain_url = "wss://alice:hunter2pw-secret@node.example:443/ws?apikey=SECRETKEY123"
    configured = settings.model_copy(
        update={
            "bittensor_network": chain_url,
            "redis_url": settings.redis_url.replace("redis://", "redis://:redis-pass-789@"),
            "log_level": "INFO",
            "log_format": "text",
        }
    )
    assert {"hunter2pw-secret", "SECRETKEY123", "redis-pass-789"} <= set(configured.secret_values())
    app = create_app(
        configured.model_copy(update={"redis_url": settings.redis_url}), chain=FakeChain()
    )
    lines: list[str] = []
    configure_logging(configured, sink=lines.append)
    async with running_app(app):
        logger.error("Chain: {} unreachable, redis at {}", chain_url, configured.redis_url)
    text = "".join(str(line) for line in lines)
    [started] = [str(line) for line in lines if "gateway started" in str(line)]
    assert "network=wss://node.example:443/ws\n" in started  # no user, no query
    for secret in ("hunter2pw-secret", "SECRETKEY123", "redis-pass-789"):
        assert secret not in text


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
    records = capture_json_records(settings)  # after create_app: it sets logging up
    async with running_app(app) as client:
        first = await client.get("/_test/deep", headers={"X-Request-ID": "req-one"})
        second = await client.get("/_test/deep")
    logger.info("after the requests")
    assert first.status_code == second.status_code == 200
    rid = second.headers["x-request-id"]
    by_id: dict[str | None, list[str]] = {}
    for record in records:
        by_id.setdefault(record.get("request_id"), []).append(record["msg"])
    for request_id in ("req-one", rid):
        lines = by_id[request_id]
        assert lines[:3] == ["deep service line", "stdlib library line", "task line"]
        assert lines[3].startswith("GET /_test/deep 200 ")  # the access line
    access = [r for r in records if r["msg"].startswith("GET /_test/deep")]
    assert [r["name"] for r in access] == ["gateway.middleware"] * 2
    stdlib = next(r for r in records if r["msg"] == "stdlib library line")
    assert stdlib["name"] == "tortoise"
    # nothing logged outside a request carries an id
    assert "after the requests" in by_id[None]
    assert set(by_id) == {None, "req-one", rid}


def _epoch_ns(stamp: datetime) -> int:
    """A record's time (an aware datetime) as integer nanoseconds since the epoch."""
    return int(stamp.replace(microsecond=0).timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


_HOSTILE = "/x%0A%7Bfoo%7D%1B%5B31m%C2%85%E2%80%A8%C3%A9%22%5C"  # \n {} ESC \x85 \u2028 é " \


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    ("path", "whole_second"),
    [
        (f"/api/v1/tao_dividends?netuid=3&hotkey={ALICE}", False),
        (_HOSTILE, False),
        ("/" + "a" * 600, False),  # cut at _PATH_LOG_MAX, marked with …
        ("/nope", True),  # isoformat() drops the fraction at a whole second
    ],
)
async def test_the_access_line_is_the_line_loguru_wrote(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    log_format: str,
    path: str,
    whole_second: bool,
) -> None:
    """The middleware's access line, byte for byte what loguru writes for the same request at
    the same instant (`logger.bind(_plain=True).info("{} {} {} {:.1f}ms", ...)` from
    gateway.middleware, request id in context)."""
    from urllib.parse import unquote

    import shared.logging as shared_logging
    from gateway.middleware import _PATH_LOG_MAX
    from shared.logging import configure_logging, printable

    log_settings = settings.model_copy(update={"log_format": log_format, "log_level": "INFO"})
    app = create_app(log_settings, chain=FakeChain())
    lines: list[Any] = []
    configure_logging(log_settings, sink=lines.append)
    logger.info("probe")  # an instant as loguru stamps it, for both lines
    stamp = lines.pop().record["time"]
    if whole_second:
        stamp = stamp.replace(microsecond=0)
    monkeypatch.setattr(shared_logging, "_now_ns", lambda: _epoch_ns(stamp) + 789)
    async with running_app(app) as client:
        response = await client.get(path, headers={**AUTH, "X-Request-ID": "req-42"})
    access = [
        line
        for line in lines
        if " gateway.middleware " in line or '"logger":"gateway.middleware"' in line
    ]
    assert len(access) == 1 and not hasattr(access[0], "record")  # not written by loguru
    if log_format == "json":
        elapsed = orjson.loads(access[0])["msg"].rsplit(" ", 1)[1]
    else:
        elapsed = access[0].split(" request_id=")[0].rsplit(" ", 1)[1]
    assert re.fullmatch(r"\d+\.\dms", elapsed)

    def as_the_middleware(record: Any) -> None:
        record["name"] = "gateway.middleware"
        record["time"] = stamp

    with logger.contextualize(request_id="req-42"):
        logger.bind(_plain=True).patch(as_the_middleware).info(
            "{} {} {} {:.1f}ms",
            "GET",
            printable(unquote(path.split("?")[0]), limit=_PATH_LOG_MAX),
            response.status_code,
            float(elapsed.removesuffix("ms")),
        )
    assert access[0] == str(lines[-1])


async def test_no_access_line_above_info_nor_for_quiet_paths(settings: Settings) -> None:
    from shared.logging import configure_logging

    app = create_app(settings, chain=FakeChain())

    async def access_lines(level: str, path: str) -> list[str]:
        lines: list[str] = []
        configure_logging(settings.model_copy(update={"log_level": level}), sink=lines.append)
        async with running_app(app) as client:
            await client.get(path)
        return [str(line) for line in lines if " gateway.middleware " in line]

    assert await access_lines("WARNING", "/nope") == []
    assert await access_lines("INFO", "/healthz") == []
    [line] = await access_lines("INFO", "/nope")
    assert " INFO    gateway.middleware GET /nope 404 " in line


async def test_an_invented_method_adds_no_metric_series_and_is_logged_cut_short(
    settings: Settings,
) -> None:
    """An HTTP parser that passes unknown methods through (h11) must not let a client add a
    label series, or a long line, per method it invents."""
    from prometheus_client import REGISTRY

    from shared.logging import configure_logging

    text_settings = settings.model_copy(update={"log_format": "text", "log_level": "INFO"})
    lines: list[str] = []
    app = create_app(text_settings, chain=FakeChain())
    configure_logging(text_settings, sink=lines.append)

    def served(method: str) -> float:
        labels = {"method": method, "route": "unmatched", "status": "404"}
        return REGISTRY.get_sample_value("taostake_http_requests_total", labels) or 0.0

    others = served("OTHER")
    async with running_app(app) as client:
        for n in range(3):
            await client.request(f"X{n:06d}{'Y' * 200}", "/nowhere")
    assert served("OTHER") == others + 3
    assert served("X000000" + "Y" * 200) == 0
    access = [str(line) for line in lines if "/nowhere" in str(line)]
    assert len(access) == 3
    assert [line.split(" /nowhere ")[0].rsplit(" ", 1)[1] for line in access] == [
        f"X{n:06d}{'Y' * 9}…" for n in range(3)
    ]  # cut short


async def test_a_trailing_slash_is_not_found_not_redirected_to_the_callers_host(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/tao_dividends/?netuid=3", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["code"] == "not_found"
