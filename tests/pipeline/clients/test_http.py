"""The shared request helper: retries, backoff, Retry-After, typed errors, redirects, secrecy."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from loguru import logger

from pipeline.clients.http import (
    AuthError,
    ExternalAPIError,
    HTTPResult,
    InvalidResponseError,
    RetryPolicy,
    make_session,
    request_json,
)
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
