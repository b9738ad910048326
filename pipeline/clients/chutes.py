"""Chutes LLM chat completions (OpenAI-compatible): `POST {CHUTES_BASE_URL}/v1/chat/completions`.

Non-streaming on purpose: the score is one short JSON object, so streaming
would only add SSE parsing and a longer-held connection for no latency win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypedDict

import aiohttp
from loguru import logger
from pydantic import SecretStr

from pipeline.clients.base import APIClient
from pipeline.clients.errors import InvalidResponseError
from pipeline.clients.http import DEFAULT_MAX_BODY_BYTES
from pipeline.clients.retry import RetryPolicy
from shared.settings import Settings

SERVICE: Final = "chutes"
DEFAULT_MAX_TOKENS: Final = 256


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """The assistant's reply text and what it cost; `content` is "" when the model sent none."""

    content: str
    model: str
    usage: Mapping[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    attempts: int = 1


class ChutesClient(APIClient):
    """One model, deterministic settings (temperature 0) so a rescore of the same tweets
    gives the same score, and a small `max_tokens` so a rambling model cannot run up cost."""

    service = SERVICE
    key_setting = "CHUTES_API_KEY"

    def __init__(
        self,
        api_key: SecretStr | str | None,
        *,
        base_url: str = "https://llm.chutes.ai",
        model: str = "unsloth/Llama-3.2-3B-Instruct",
        timeout_s: float = 30.0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        json_mode: bool = True,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        super().__init__(api_key, timeout_s, retry, session, max_body_bytes)
        self._endpoint = base_url.rstrip("/") + "/v1/chat/completions"
        self._model = model
        self._max_tokens = max_tokens
        self._json_mode = json_mode

    @classmethod
    def from_settings(
        cls, settings: Settings, *, session: aiohttp.ClientSession | None = None
    ) -> ChutesClient:
        return cls(
            settings.chutes_api_key,
            base_url=settings.chutes_base_url,
            model=settings.chutes_model,
            timeout_s=settings.chutes_timeout_s,
            retry=RetryPolicy(max_retries=settings.http_max_retries),
            session=session,
            max_body_bytes=settings.http_max_body_bytes,
        )

    @property
    def model(self) -> str:
        return self._model

    async def complete(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None
    ) -> ChatCompletion:
        """The model's reply to `messages`.

        Raises `NotConfiguredError` without a key; `AuthError` (401), `QuotaError`
        (402) and `ExternalAPIError` for 404 "model not found" without retrying;
        `ExternalAPIError(retryable=True)` once 429/503/5xx/timeouts outlast the
        retries; `InvalidResponseError` for a 200 without `choices`.
        """
        body: dict[str, Any] = {
            "model": self._model,
            "messages": list(messages),
            "temperature": 0,
            "max_tokens": max_tokens or self._max_tokens,
            "stream": False,
        }
        if self._json_mode:
            body["response_format"] = {"type": "json_object"}
        result = await self._request("POST", self._endpoint, json_body=body)
        completion = replace(
            parse_completion(result.body, default_model=self._model), attempts=result.attempts
        )
        logger.bind(service=SERVICE, model=completion.model).info(
            "chutes completion: {} chars, finish={}, usage={}, {:.2f}s, {} tries",
            len(completion.content),
            completion.finish_reason,
            dict(completion.usage),
            result.elapsed_s,
            result.attempts,
        )
        return completion


def parse_completion(body: Any, *, default_model: str) -> ChatCompletion:
    """The first choice's content from an OpenAI-style completion body."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidResponseError(SERVICE, 200, "completion has no choices", retryable=False)
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage_raw = body.get("usage")
    usage = (
        {k: v for k, v in usage_raw.items() if isinstance(v, int) and not isinstance(v, bool)}
        if isinstance(usage_raw, dict)
        else {}
    )
    model = body.get("model")
    finish = choice.get("finish_reason")
    return ChatCompletion(
        content=content if isinstance(content, str) else "",
        model=model if isinstance(model, str) and model else default_model,
        usage=usage,
        finish_reason=finish if isinstance(finish, str) else None,
    )
