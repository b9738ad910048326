"""Pure ASGI middleware: request id, timing, access log, metrics, last-resort 500.

Written against raw ASGI (not BaseHTTPMiddleware) because it runs on every
request of the hot path.
"""

from __future__ import annotations

import re
import time
import uuid

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response
from gateway.metrics import HTTP_LATENCY, HTTP_REQUESTS

_VALID_RID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUIET = {"/healthz", "/metrics"}


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _VALID_RID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "unhandled error", request_id=rid, path=scope["path"], error=type(exc).__name__
            )
            if not started:
                response = error_response(
                    500,
                    "internal_error",
                    f"internal error ({type(exc).__name__}); quote request_id when reporting it",
                    rid,
                )
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            path_label = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path_label, str(status)).inc()
            HTTP_LATENCY.labels(path_label).observe(elapsed)
            if scope["path"] not in _QUIET:
                logger.info(
                    "{method} {path} {status} {ms:.1f}ms",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=elapsed * 1000,
                    request_id=rid,
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
