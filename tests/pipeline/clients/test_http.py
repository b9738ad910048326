"""The shared request helper: retries, backoff, Retry-After, typed errors, redirects, secrecy."""

from __future__ import annotations

import io
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web
from loguru import logger

from pipeline.clients.http import (
    AuthError,
    ExternalAPIError,
    HTTPResult,
    InvalidResponseError,
    QuotaError,
    RetryPolicy,
    error_detail,
    error_for_status,
    make_session,
    parse_retry_after,
    request_json,
    scrub,
)
from shared.backoff import Backoff
from tests.fakes import FakeServer, Reply

SECRET = "sk-very-secret-key-0042"


class ScriptedServer(FakeServer):
    """Answers any path with the scripted reply (`{"ok": true}` by default)."""

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        await self.record(request)
        reply = self.next_reply()
        await self.wait(reply)
        if reply.redirect_to is not None:
            return self.redirect(request, reply)
        body = reply.body if reply.body is not None else {"ok": True}
        return self.respond(reply.status, body, reply)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


class Sleeps:
    """Records the backoff the helper asks for instead of waiting it out."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


FAST = RetryPolicy(max_retries=3, backoff_base_s=0.001, backoff_max_s=0.002, retry_after_max_s=5)


async def call(
    session: aiohttp.ClientSession,
    url: str,
    *,
    policy: RetryPolicy = FAST,
    sleep: Sleeps | None = None,
    timeout_s: float = 2.0,
    trusted: tuple[str, ...] = (),
    method: str = "GET",
) -> HTTPResult:
    result = await request_json(
        session,
        method,
        url,
        service="svc",
        timeout_s=timeout_s,
        policy=policy,
        headers={"Authorization": SECRET},
        params={"q": "x y", "flag": "true"},
        secrets=(SECRET,),
        trusted_origins=trusted,
        sleep=sleep or Sleeps(),
    )
    return result


class TestRetryPolicy:
    def test_backoff_grows_exponentially_with_jitter_and_is_capped(self) -> None:
        policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0)
        for index, full in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
            delays = [policy.backoff(index) for _ in range(50)]
            assert all(full * 0.5 <= d <= full for d in delays)
            assert len({round(d, 6) for d in delays}) > 1  # jittered

    def test_retry_after_wins_when_longer_but_is_capped(self) -> None:
        policy = RetryPolicy(backoff_base_s=0.1, backoff_max_s=1.0, retry_after_max_s=30.0)
        assert policy.backoff(0, retry_after_s=7.0) == 7.0
        assert policy.backoff(0, retry_after_s=3600.0) == 30.0
        assert policy.backoff(0, retry_after_s=0.0) <= 0.1

    def test_waits_follow_the_shared_backoff(self) -> None:
        policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=8.0, retry_after_max_s=30.0)
        shared = Backoff(first_s=0.5, cap_s=8.0, jitter=0.5, retry_after_max_s=30.0)
        random.seed(3)
        ours = [policy.backoff(n, retry_after_s=None) for n in range(6)]
        random.seed(3)
        assert ours == [shared.delay(n) for n in range(6)]

    def test_nonsense_waits_are_refused_at_construction(self) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(backoff_base_s=0.0)


class TestParsing:
    def test_retry_after_seconds_and_http_date(self) -> None:
        now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        assert parse_retry_after("12") == 12.0
        assert parse_retry_after(" 1.5 ") == 1.5
        date = format_datetime(now + timedelta(seconds=20), usegmt=True)
        assert parse_retry_after(date, now=now) == pytest.approx(20.0)
        assert parse_retry_after(format_datetime(now - timedelta(hours=1)), now=now) == 0.0
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None
        assert parse_retry_after("nan") is None

    def test_error_detail_shapes(self) -> None:
        assert error_detail(b'{"detail": "Authentication required."}') == (
            "Authentication required."
        )
        quota = b'{"detail": {"message": "Quota exceeded", "quota_reset_timestamp": "x"}}'
        assert error_detail(quota) == "Quota exceeded"
        validation = b'{"detail": [{"loc": ["query", "query"], "msg": "Field required"}]}'
        assert error_detail(validation) == "query.query: Field required"
        assert error_detail(b'{"error": "Insufficient balance"}') == "Insufficient balance"
        assert (
            error_detail(b"<html>\n<b>Bad   Gateway</b></html>")
            == "<html> <b>Bad Gateway</b></html>"
        )
        assert error_detail(b"") == "(empty body)"
        assert len(error_detail(b"x" * 5000)) == 300

    def test_error_detail_and_scrub_mask_secrets(self) -> None:
        body = f'{{"detail": "bad key {SECRET}"}}'.encode()
        assert error_detail(body, [SECRET]) == "bad key ***"
        assert scrub(f"a{SECRET}b", [SECRET, ""]) == "a***b"

    @pytest.mark.parametrize(
        ("status", "kind", "retryable"),
        [
            (401, AuthError, False),
            (403, AuthError, False),
            (402, QuotaError, False),
            (404, ExternalAPIError, False),
            (422, ExternalAPIError, False),
            (400, ExternalAPIError, False),
            (408, ExternalAPIError, True),
            (429, ExternalAPIError, True),
            (500, ExternalAPIError, True),
            (502, ExternalAPIError, True),
            (503, ExternalAPIError, True),
            (599, ExternalAPIError, True),
        ],
    )
    def test_status_mapping(self, status: int, kind: type, retryable: bool) -> None:
        error = error_for_status("svc", status, "why")
        assert type(error) is kind
        assert error.retryable is retryable
        assert error.upstream_status == status
        assert error.message == f"svc: HTTP {status}: why"


class TestRequestJson:
    async def test_success_sends_headers_and_params(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        result = await request_json(
            session,
            "POST",
            server.base_url + "/v1/x",
            service="svc",
            timeout_s=2,
            policy=FAST,
            headers={"Authorization": SECRET},
            params={"a": "1"},
            json_body={"k": [1, 2]},
        )
        assert result.status == 200
        assert result.body == {"ok": True}
        assert result.attempts == 1
        [req] = server.requests
        assert (req.method, req.path, req.query) == ("POST", "/v1/x", {"a": "1"})
        assert req.headers["Authorization"] == SECRET
        assert req.body == {"k": [1, 2]}

    async def test_result_headers_are_case_insensitive(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(Reply(headers={"x-desearch-cost-usd": "0.5"}))
        result = await call(session, server.base_url + "/r")
        assert result.headers["X-Desearch-Cost-Usd"] == "0.5"

    async def test_429_then_success_honours_retry_after(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(
            Reply(status=429, body={"detail": "slow down"}, headers={"Retry-After": "2"}),
            Reply(status=503, body={"detail": "no instances"}),
        )
        sleeps = Sleeps()
        result = await call(session, server.base_url + "/r", sleep=sleeps)
        assert result.attempts == 3
        assert server.request_count == 3
        assert sleeps.calls[0] == 2.0  # Retry-After, not the 1 ms backoff
        assert sleeps.calls[1] <= 0.002

    async def test_retry_after_is_capped(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(Reply(status=429, headers={"Retry-After": "86400"}))
        sleeps = Sleeps()
        await call(session, server.base_url + "/r", sleep=sleeps)
        assert sleeps.calls == [5.0]

    async def test_gives_up_after_bounded_retries(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.default_reply = Reply(status=500, text="Internal Server Error")
        sleeps = Sleeps()
        with pytest.raises(ExternalAPIError) as info:
            await call(session, server.base_url + "/r", sleep=sleeps)
        assert server.request_count == 4
        assert len(sleeps.calls) == 3
        assert info.value.retryable is True
        assert info.value.attempts == 4
        assert info.value.upstream_status == 500
        assert info.value.detail == "Internal Server Error"

    @pytest.mark.parametrize("status", [401, 402, 404, 422])
    async def test_no_retry_on_client_errors(
        self, status: int, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.default_reply = Reply(status=status, body={"detail": "nope"})
        sleeps = Sleeps()
        with pytest.raises(ExternalAPIError) as info:
            await call(session, server.base_url + "/r", sleep=sleeps)
        assert server.request_count == 1
        assert sleeps.calls == []
        assert info.value.retryable is False
        assert info.value.detail == "nope"

    async def test_timeout_is_retried_then_raised(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.default_reply = Reply(delay_s=2.0)
        policy = RetryPolicy(max_retries=1, backoff_base_s=0.001, backoff_max_s=0.001)
        with pytest.raises(ExternalAPIError) as info:
            await call(session, server.base_url + "/slow", policy=policy, timeout_s=0.2)
        assert server.request_count == 2
        assert info.value.upstream_status is None
        assert info.value.retryable is True
        assert "timed out after 0.2s" in info.value.message

    async def test_timeout_then_success(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(Reply(delay_s=2.0))
        result = await call(session, server.base_url + "/slow", timeout_s=0.2)
        assert result.attempts == 2

    async def test_connection_refused_is_retried(self, session: aiohttp.ClientSession) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        sleeps = Sleeps()
        with pytest.raises(ExternalAPIError) as info:
            await call(session, f"http://127.0.0.1:{port}/x", sleep=sleeps)
        assert len(sleeps.calls) == 3
        assert info.value.upstream_status is None
        assert info.value.retryable is True

    async def test_non_json_success_is_invalid_response(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.default_reply = Reply(text="<html>maintenance</html>")
        with pytest.raises(InvalidResponseError) as info:
            await call(session, server.base_url + "/r")
        assert server.request_count == 1
        assert "not JSON" in info.value.detail

    async def test_same_origin_redirect_keeps_auth_and_query(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(Reply(redirect_to=server.base_url + "/v2", redirect_status=301))
        result = await call(session, server.base_url + "/old")
        _, second = server.requests
        assert second.path == "/v2/old"
        assert second.query == {"q": "x y", "flag": "true"}
        assert second.headers["Authorization"] == SECRET
        assert result.permanent_redirect == server.base_url + "/v2/old"

    async def test_redirect_to_trusted_origin_resends_auth(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        async with ScriptedServer() as other:
            server.script(Reply(redirect_to=other.base_url, redirect_status=308))
            await call(session, server.base_url + "/twitter", trusted=(other.base_url,))
            assert other.requests[0].headers["Authorization"] == SECRET
            assert other.requests[0].query == {"q": "x y", "flag": "true"}

    async def test_redirect_to_untrusted_origin_never_sends_the_key(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        async with ScriptedServer() as other:
            server.script(Reply(redirect_to=other.base_url))
            with pytest.raises(ExternalAPIError) as info:
                await call(session, server.base_url + "/twitter")
            assert other.request_count == 0
            assert info.value.retryable is False
            assert "untrusted origin" in info.value.detail

    async def test_post_is_not_redirected_by_301(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(Reply(redirect_to=server.base_url + "/v2", redirect_status=301))
        with pytest.raises(ExternalAPIError) as info:
            await call(session, server.base_url + "/c", method="POST")
        assert server.request_count == 1
        assert "update the base URL" in info.value.detail

    async def test_secret_never_reaches_errors_or_logs(
        self, server: ScriptedServer, session: aiohttp.ClientSession
    ) -> None:
        server.script(Reply(status=503, body={"detail": f"key {SECRET} overloaded"}))
        server.default_reply = Reply(status=401, body={"detail": f"bad key {SECRET}"})
        sink = io.StringIO()
        handler = logger.add(sink, level="DEBUG", format="{message} {extra}")
        try:
            with pytest.raises(AuthError) as info:
                await call(session, server.base_url + "/r")
        finally:
            logger.remove(handler)
        assert server.request_count == 2
        assert SECRET not in str(info.value)
        assert info.value.detail == "bad key ***"
        logged = sink.getvalue()
        assert "retrying" in logged
        assert SECRET not in logged


class TestBodyCap:
    """An outside API's body is never read past HTTP_MAX_BODY_BYTES."""

    @pytest.fixture
    async def big_server(self) -> AsyncIterator[tuple[str, list[int]]]:
        sent: list[int] = []

        async def declared(request: web.Request) -> web.Response:
            return web.Response(body=b'{"a": "' + b"x" * 300_000 + b'"}')

        async def streamed(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                for _ in range(200):  # 200 × 64 KiB = 12.5 MiB if the client kept reading
                    await resp.write(b"x" * 65536)
                    sent.append(65536)
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass
            return resp

        async def small(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/declared", declared)
        app.router.add_get("/streamed", streamed)
        app.router.add_get("/small", small)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"http://127.0.0.1:{port}", sent
        finally:
            await runner.cleanup()

    async def _get(self, session: aiohttp.ClientSession, url: str) -> HTTPResult:
        return await request_json(
            session,
            "GET",
            url,
            service="svc",
            timeout_s=5,
            policy=FAST,
            max_body_bytes=128 * 1024,
            sleep=Sleeps(),
        )

    async def test_declared_length_over_the_cap_is_refused_unread(
        self, big_server: tuple[str, list[int]], session: aiohttp.ClientSession
    ) -> None:
        base, _ = big_server
        with pytest.raises(InvalidResponseError, match="over the 131072-byte cap") as info:
            await self._get(session, base + "/declared")
        assert info.value.retryable is False
        assert info.value.attempts == 1

    async def test_streamed_body_over_the_cap_stops_reading(
        self, big_server: tuple[str, list[int]], session: aiohttp.ClientSession
    ) -> None:
        base, sent = big_server
        with pytest.raises(InvalidResponseError, match="more than 131072 bytes"):
            await self._get(session, base + "/streamed")
        assert sum(sent) < 200 * 65536  # the server could not push it all

    async def test_body_under_the_cap_is_read(
        self, big_server: tuple[str, list[int]], session: aiohttp.ClientSession
    ) -> None:
        base, _ = big_server
        assert (await self._get(session, base + "/small")).body == {"ok": True}
