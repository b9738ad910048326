"""GET /console and its assets: served as files with a strict Content-Security-Policy, and
a script that never parses data as HTML. The routes it reads refuse a token without `read`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.console.router import CSP
from tests.conftest import make_settings, running_app
from tests.fakes.chain import FakeChain
from tests.gateway.conftest import READER, bearer

STATIC = Path(__file__).resolve().parents[3] / "gateway" / "console" / "static"
TRADE_ONLY = "test-token-trade-only-111"
ASSETS = {
    "/console": "text/html",
    "/console/console.js": "text/javascript",
    "/console/console.css": "text/css",
}


@pytest.mark.parametrize(("path", "media_type"), ASSETS.items())
async def test_assets_carry_the_security_headers(
    client: httpx.AsyncClient, path: str, media_type: str
) -> None:
    response = await client.get(path)  # no token: the page asks for one itself
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    headers = response.headers
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    again = await client.get(path, headers={"If-None-Match": headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_policy_allows_only_this_origin_and_nothing_inline() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CSP and "http" not in CSP


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_remote() -> None:
    html = (STATIC / "console.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert scripts == [""]  # one script, loaded from its file
    assert not re.search(r"\sstyle=|<style\b|\son[a-z]+=", html)
    for asset in (html, (STATIC / "console.css").read_text(), (STATIC / "console.js").read_text()):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", asset), "nothing remote"


def test_the_script_never_writes_data_as_html() -> None:
    script = (STATIC / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script and "localStorage" not in script
    assert "sessionStorage" in script and "document.cookie" not in script


@pytest.fixture
async def trade_only(
    redis_url: str, clean_db: str, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        redis_url, clean_db, api_tokens=SecretStr(f"{TRADE_ONLY}:trade,{READER}:read")
    )
    async with running_app(create_app(settings, chain=FakeChain())) as client:
        yield client


@pytest.mark.parametrize(
    "path", ["/api/v1/trades", "/api/v1/positions", "/api/v1/subnets/18/scores", "/api/v1/streams"]
)
async def test_the_console_routes_need_read(trade_only: httpx.AsyncClient, path: str) -> None:
    refused = await trade_only.get(path, headers=bearer(TRADE_ONLY))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert (await trade_only.get(path, headers=bearer(READER))).status_code == 200
    unknown = await trade_only.get(path, headers=bearer("not-a-token-of-this-gateway"))
    assert unknown.status_code == 401
