"""A local Chutes LLM: `POST /v1/chat/completions`, `Authorization: Bearer <key>`.

Answers like the real service (../shared/api-samples): the sample completion
with the scripted reply text as `content`; SSE chunks ending in `data: [DONE]`
when `stream` is true; `{"detail": ...}` errors — 401 "Authentication
required." (no or non-Bearer header) or "Invalid token or user not found" (wrong
key), 402 quota, 404 "model not found: <model>" for an unknown model, and the
429/503 bodies when scripted.

The reply text is `Reply.content` if scripted, else `content` (a string, or a
function of the request body, so end-to-end tests can answer from the prompt),
else the sample's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import FakeServer, Reply, load_sample, load_text_sample

DEFAULT_KEY = "cpk_test_0123456789abcdef"
DEFAULT_MODEL = "unsloth/Llama-3.2-3B-Instruct"

_CHAT_200: dict[str, Any] = {
    "id": "chatcmpl-3f1c2a9e8d7b4c6a",
    "object": "chat.completion",
    "created": 1735689600,
    "model": DEFAULT_MODEL,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": None,
                "content": '{"sentiment": "positive", "score": 62}',
                "tool_calls": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 187, "total_tokens": 199, "completion_tokens": 12},
}
_ERRORS: dict[str, Any] = {
    "401_missing": {"detail": "Authentication required."},
    "401_bad": {"detail": "Invalid token or user not found"},
    "402": {
        "detail": {
            "message": "Quota exceeded and account balance is $0.0, please pay with fiat or "
            "send tao to ...",
            "quota_reset_timestamp": "2026-11-28T00:00:00Z",
        }
    },
    "404": {"detail": "model not found: no/such-model"},
    "429": {"detail": "Infrastructure is at maximum capacity, try again later"},
    "503": {
        "detail": "No instances available (yet) for chute_id='20acffc0-0c5f-58e3-97af-21fc0b261ec4'"
    },
}
_STREAM_LINE = (
    'data: {"id":"chatcmpl-3f1c2a9e8d7b4c6a","object":"chat.completion.chunk",'
    '"created":1735689600,"model":"unsloth/Llama-3.2-3B-Instruct","choices":[{"index":0,'
    '"delta":{"content":"{\\"sentiment\\": \\"positive\\", \\"score\\": 62}"},'
    '"logprobs":null,"finish_reason":null}]}\n\ndata: [DONE]\n\n'
)

ContentSource = str | Callable[[dict[str, Any]], str]


def sample_completion() -> dict[str, Any]:
    body: dict[str, Any] = load_sample("chutes_chat_200.json", _CHAT_200)
    return body


def error_body(status: int, *, model: str = "no/such-model", bad_key: bool = True) -> Any:
    """What the real service answers with `status`."""
    errors: dict[str, Any] = load_sample("chutes_errors.json", _ERRORS)
    if status == 401:
        return errors["401_bad" if bad_key else "401_missing"]
    if status == 404:
        return {"detail": f"model not found: {model}"}
    if str(status) in errors:
        return errors[str(status)]
    if status == 500:
        return {"detail": "Internal server error"}
    return {"detail": f"HTTP {status}"}


class FakeChutes(FakeServer):
    """Chat completions fake serving the models in `models`."""

    def __init__(
        self,
        api_key: str = DEFAULT_KEY,
        *,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        content: ContentSource | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = models
        self.content = content
        self._sample = sample_completion()
        self._stream_sample = load_text_sample("chutes_stream_200.txt", _STREAM_LINE)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON body of every request, in order."""
        return [r.body for r in self.requests if isinstance(r.body, dict)]

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        return app

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        reply = self.next_reply()
        await self.wait(reply)
        if reply.redirect_to is not None:
            return self.redirect(request, reply)
        if reply.check_auth:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return self.respond(401, error_body(401, bad_key=False), reply)
            if header.removeprefix("Bearer ") != self.api_key:
                return self.respond(401, error_body(401), reply)
        body = recorded.body if isinstance(recorded.body, dict) else None
        if body is None or not isinstance(body.get("messages"), list):
            detail = [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]
            return self.respond(422, {"detail": detail}, reply)
        model = str(body.get("model", ""))
        if reply.status != 200:
            payload = (
                reply.body if reply.body is not None else error_body(reply.status, model=model)
            )
            return self.respond(reply.status, payload, reply)
        if model not in self.models:
            return self.respond(404, error_body(404, model=model), reply)
        if reply.body is not None:
            return self.respond(200, reply.body, reply)
        content = self._content(reply, body)
        if body.get("stream"):
            return self._stream(content, model, reply)
        completion = copy.deepcopy(self._sample)
        completion["model"] = model
        completion["choices"][0]["message"]["content"] = content
        return self.respond(200, completion, reply)

    def _content(self, reply: Reply, body: dict[str, Any]) -> str:
        if reply.content is not None:
            return reply.content
        if callable(self.content):
            return self.content(body)
        if self.content is not None:
            return self.content
        sample_content: str = self._sample["choices"][0]["message"]["content"]
        return sample_content

    def _stream(self, content: str, model: str, reply: Reply) -> web.Response:
        """The sample's SSE lines with their content chunk replaced by `content`."""
        lines: list[str] = []
        for line in self._stream_sample.splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line.removeprefix("data: "))
            chunk["model"] = model
            delta = chunk["choices"][0]["delta"]
            if delta.get("content"):
                delta["content"] = content
            lines.append("data: " + orjson.dumps(chunk).decode())
        text = "\n\n".join([*lines, "data: [DONE]"]) + "\n\n"
        return web.Response(
            status=200, text=text, content_type="text/event-stream", headers=reply.headers
        )
