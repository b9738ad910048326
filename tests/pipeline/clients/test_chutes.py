"""ChutesClient against the local fake, and the fake's own fidelity to the samples."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.clients.chutes import ChatMessage, ChutesClient, parse_completion
from pipeline.clients.http import (
    AuthError,
    ExternalAPIError,
    InvalidResponseError,
    NotConfiguredError,
    QuotaError,
    RetryPolicy,
)
from shared.settings import Settings
from tests.fakes import SAMPLES_ENV, Reply, samples_dir
from tests.fakes.chutes import DEFAULT_KEY, DEFAULT_MODEL, FakeChutes

FAST = RetryPolicy(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.002)
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "rate"},
    {"role": "user", "content": "tweets"},
]


@pytest.fixture
async def chutes() -> AsyncIterator[FakeChutes]:
    async with FakeChutes() as fake:
        yield fake


def make_client(fake: FakeChutes, **kwargs: Any) -> ChutesClient:
    options: dict[str, Any] = {"base_url": fake.base_url, "retry": FAST, "timeout_s": 2.0}
    options.update(kwargs)
    key = options.pop("api_key", DEFAULT_KEY)
    return ChutesClient(key, **options)


class TestComplete:
    async def test_request_shape_and_result(self, chutes: FakeChutes) -> None:
        chutes.content = '{"score": 40, "reason": "upbeat"}'
        async with make_client(chutes) as client:
            completion = await client.complete(MESSAGES)
        [req] = chutes.requests
        assert (req.method, req.path) == ("POST", "/v1/chat/completions")
        assert req.headers["Authorization"] == f"Bearer {DEFAULT_KEY}"
        assert req.body == {
            "model": DEFAULT_MODEL,
            "messages": MESSAGES,
            "temperature": 0,
            "max_tokens": 256,
            "stream": False,
            "response_format": {"type": "json_object"},
        }
        assert completion.content == '{"score": 40, "reason": "upbeat"}'
        assert completion.model == DEFAULT_MODEL
        assert completion.usage == {
            "prompt_tokens": 187,
            "total_tokens": 199,
            "completion_tokens": 12,
        }
        assert completion.finish_reason == "stop"
        assert completion.attempts == 1

    async def test_sample_reply_by_default_and_json_mode_off(self, chutes: FakeChutes) -> None:
        async with make_client(chutes, json_mode=False, max_tokens=64) as client:
            completion = await client.complete(MESSAGES, max_tokens=32)
        assert completion.content == '{"sentiment": "positive", "score": 62}'
        assert "response_format" not in chutes.bodies[0]
        assert chutes.bodies[0]["max_tokens"] == 32

    async def test_no_key_sends_nothing(self, chutes: FakeChutes) -> None:
        async with make_client(chutes, api_key="") as client:
            assert not client.configured
            with pytest.raises(NotConfiguredError):
                await client.complete(MESSAGES)
        assert chutes.request_count == 0


class TestErrors:
    async def test_wrong_key_401_not_retried(self, chutes: FakeChutes) -> None:
        async with make_client(chutes, api_key="cpk_wrong_key_xyz") as client:
            with pytest.raises(AuthError) as info:
                await client.complete(MESSAGES)
        assert chutes.request_count == 1
        assert info.value.detail == "Invalid token or user not found"
        assert "cpk_wrong_key_xyz" not in str(info.value)

    async def test_402_quota_not_retried(self, chutes: FakeChutes) -> None:
        chutes.default_reply = Reply(status=402)
        async with make_client(chutes) as client:
            with pytest.raises(QuotaError) as info:
                await client.complete(MESSAGES)
        assert chutes.request_count == 1
        assert info.value.detail.startswith("Quota exceeded")

    async def test_unknown_model_404_not_retried(self, chutes: FakeChutes) -> None:
        async with make_client(chutes, model="no/such-model") as client:
            with pytest.raises(ExternalAPIError) as info:
                await client.complete(MESSAGES)
        assert chutes.request_count == 1
        assert info.value.upstream_status == 404
        assert info.value.retryable is False
        assert info.value.detail == "model not found: no/such-model"

    async def test_429_and_503_retried_then_success(self, chutes: FakeChutes) -> None:
        chutes.script(Reply(status=429), Reply(status=503))
        async with make_client(chutes) as client:
            completion = await client.complete(MESSAGES)
        assert chutes.request_count == 3
        assert completion.attempts == 3

    async def test_503_persistent_gives_up(self, chutes: FakeChutes) -> None:
        chutes.default_reply = Reply(status=503)
        async with make_client(chutes) as client:
            with pytest.raises(ExternalAPIError) as info:
                await client.complete(MESSAGES)
        assert chutes.request_count == 3
        assert info.value.retryable is True
        assert info.value.detail.startswith("No instances available")

    async def test_timeout_bounded(self, chutes: FakeChutes) -> None:
        chutes.default_reply = Reply(delay_s=3.0)
        async with make_client(chutes, timeout_s=0.2) as client:
            with pytest.raises(ExternalAPIError) as info:
                await client.complete(MESSAGES)
        assert chutes.request_count == 3
        assert info.value.upstream_status is None

    async def test_200_without_choices(self, chutes: FakeChutes) -> None:
        chutes.default_reply = Reply(body={"id": "x", "choices": []})
        async with make_client(chutes) as client:
            with pytest.raises(InvalidResponseError):
                await client.complete(MESSAGES)


def test_parse_completion_tolerates_null_content_and_odd_usage() -> None:
    body = {
        "choices": [{"message": {"content": None}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "prompt_tokens_details": None, "bogus": True},
    }
    completion = parse_completion(body, default_model="m")
    assert completion.content == ""
    assert completion.model == "m"
    assert completion.usage == {"prompt_tokens": 5}
    assert completion.finish_reason == "length"


def test_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        chutes_base_url="http://127.0.0.1:9/",
        chutes_model="some/model",
        http_max_retries=4,
    )
    client = ChutesClient.from_settings(settings)
    assert not client.configured
    assert client.model == "some/model"
    assert client._endpoint == "http://127.0.0.1:9/v1/chat/completions"
    assert client._retry.max_retries == 4


class TestFake:
    """The fake must answer like the real service, or the client tests prove nothing."""

    async def test_missing_and_non_bearer_auth(self, chutes: FakeChutes) -> None:
        url = chutes.base_url + "/v1/chat/completions"
        body = {"model": DEFAULT_MODEL, "messages": []}
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=body) as resp:
                assert resp.status == 401
                assert await resp.json() == {"detail": "Authentication required."}
            async with session.post(url, json=body, headers={"Authorization": DEFAULT_KEY}) as resp:
                assert resp.status == 401

    async def test_streaming_answer(self, chutes: FakeChutes) -> None:
        chutes.content = '{"score": -5}'
        body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": True}
        headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
        url = chutes.base_url + "/v1/chat/completions"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers=headers) as resp,
        ):
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            text = await resp.text()
        lines = [line for line in text.split("\n\n") if line]
        assert lines[-1] == "data: [DONE]"
        assert any('{\\"score\\": -5}' in line for line in lines)

    async def test_content_callable_sees_the_request(self) -> None:
        def content(body: dict[str, Any]) -> str:
            return f'{{"score": {len(body["messages"])}}}'

        async with FakeChutes(content=content) as fake, make_client(fake) as client:
            completion = await client.complete(MESSAGES)
        assert completion.content == '{"score": 2}'

    async def test_works_without_samples_dir(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv(SAMPLES_ENV, str(tmp_path / "absent"))
        assert samples_dir() is None
        async with FakeChutes() as fake:
            fake.script(Reply(status=503))
            async with make_client(fake) as client:
                completion = await client.complete(MESSAGES)
        assert completion.content == '{"sentiment": "positive", "score": 62}'
        assert fake.request_count == 2

    def test_embedded_shapes_match_the_samples(self) -> None:
        directory = samples_dir()
        if directory is None:
            pytest.skip("../shared/api-samples not present")
        import orjson

        from tests.fakes import chutes as fake_chutes
        from tests.fakes import datura as fake_datura

        real_chat = orjson.loads((directory / "chutes_chat_200.json").read_bytes())
        fake_content = fake_chutes._CHAT_200["choices"][0]["message"]["content"]
        assert real_chat["choices"][0]["message"]["content"] == fake_content
        real_errors = orjson.loads((directory / "chutes_errors.json").read_bytes())
        assert real_errors == fake_chutes._ERRORS
        assert orjson.loads((directory / "datura_402.json").read_bytes()) == fake_datura._ERROR_402
        assert orjson.loads((directory / "datura_422.json").read_bytes()) == fake_datura._ERROR_422
        real_tweets = orjson.loads((directory / "datura_search_200.json").read_bytes())
        assert [t["text"] for t in real_tweets] == [t["text"] for t in fake_datura._SEARCH_200]
