"""Local stand-ins for the outside HTTP APIs (Datura, Chutes), shared by tests and bench/.

Each fake is a real aiohttp web server on 127.0.0.1 and a free port, so the
clients under test go through their real HTTP stack: headers, query strings,
status codes, redirects, timeouts. Bodies come from ../shared/api-samples
(override with API_SAMPLES_DIR); minimal copies of the same shapes are embedded
so the fakes still work where that folder is absent.

A test scripts behaviour with `Reply` values consumed one per request (then the
fake's default answer), and asserts on `requests`, the recorded calls.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

SAMPLES_ENV = "API_SAMPLES_DIR"
_DEFAULT_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "api-samples"


def samples_dir() -> Path | None:
    """Where the API samples live, if anywhere: $API_SAMPLES_DIR, else ../shared/api-samples."""
    configured = os.environ.get(SAMPLES_ENV)
    path = Path(configured) if configured else _DEFAULT_SAMPLES
    return path if path.is_dir() else None


def load_sample(name: str, fallback: Any) -> Any:
    """A JSON sample by file name, or a deep copy of `fallback` when it is not available."""
    directory = samples_dir()
    if directory is not None and (directory / name).is_file():
        return orjson.loads((directory / name).read_bytes())
    return copy.deepcopy(fallback)


def load_text_sample(name: str, fallback: str) -> str:
    directory = samples_dir()
    if directory is not None and (directory / name).is_file():
        return (directory / name).read_text()
    return fallback


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Unset fields mean "what the real service would send".

    `status` picks the real error body for that status unless `body`/`text` is
    given; `delay_s` waits before answering (longer than the client's timeout
    makes a timeout); `redirect_to` answers 301 to that base URL plus the
    request's path and query, before any auth check, like a host move at the
    edge; `content` is the LLM's reply text (Chutes only).
    """

    status: int = 200
    body: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    redirect_to: str | None = None
    redirect_status: int = 301
    content: str | None = None
    check_auth: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeServer:
    """Start/stop, scripting and recording shared by the fakes."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self.default_reply: Reply = Reply()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- scripting and inspection -------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order; later requests get `default_reply`."""
        self._script.extend(replies)

    def next_reply(self) -> Reply:
        return self._script.popleft() if self._script else self.default_reply

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def reset(self) -> None:
        self.requests.clear()
        self._script.clear()
        self.default_reply = Reply()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("fake server is not started")
        return f"http://127.0.0.1:{self._port}"

    # --- lifecycle -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        # handler_cancellation: a client that times out and hangs up ends the delayed
        # handler, so shutdown never waits for a long scripted delay to run out.
        self._runner = web.AppRunner(
            self.build_app(), handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- helpers for handlers --------------------------------------------------------------
    async def record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode(errors="replace")
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
        )
        self.requests.append(recorded)
        return recorded

    @staticmethod
    async def wait(reply: Reply) -> None:
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)

    @staticmethod
    def redirect(request: web.Request, reply: Reply) -> web.Response:
        assert reply.redirect_to is not None
        location = reply.redirect_to.rstrip("/") + request.path_qs
        return web.Response(status=reply.redirect_status, headers={"Location": location})

    @staticmethod
    def respond(status: int, body: Any, reply: Reply) -> web.Response:
        """JSON `body` (or the reply's raw `text`) with the reply's extra headers."""
        if reply.text is not None:
            return web.Response(
                status=status, text=reply.text, content_type="text/plain", headers=reply.headers
            )
        if isinstance(body, str):
            return web.Response(
                status=status, text=body, content_type="text/plain", headers=reply.headers
            )
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=reply.headers,
        )


__all__ = [
    "FakeServer",
    "RecordedRequest",
    "Reply",
    "load_sample",
    "load_text_sample",
    "samples_dir",
]
