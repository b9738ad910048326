"""Pure ASGI middleware: request id, timing, access log, metrics, last-resort 500.

Written against raw ASGI (not BaseHTTPMiddleware) because it runs on every
request of the hot path.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response, status_for
from gateway.limits import RequestRefused, capped_receive, check_head
from gateway.metrics import HTTP_LATENCY, HTTP_REQUESTS, OVERSIZED_REQUESTS
from shared.logging import access_line, printable

_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _observe(method: str, route: str, status: int, elapsed: float) -> None:
    """Record the request in Prometheus, reusing label children (a hot-path saving)."""
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(route))
        if len(_children) < 1000:
            _children[key] = children
    children[0].inc()
    children[1].observe(elapsed)


# The methods that keep their own name in metrics; any other (an HTTP parser may pass an
# unknown method through) is counted as "OTHER", so a client cannot add label series, and
# is cut short in the access line.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_METHOD_LOG_MAX = 16
_VALID_RID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUIET = {"/healthz", "/metrics"}
_PATH_LOG_MAX = 512  # longer paths are cut in the access line (marked with …)


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

        # Every line logged while serving the request carries its id, however deep (services,
        # clients, stdlib loggers routed through loguru), and so do the tasks it starts.
        with logger.contextualize(request_id=rid):
            try:
                try:
                    check_head(scope)
                except RequestRefused as exc:
                    OVERSIZED_REQUESTS.labels(exc.code).inc()
                    response = error_response(status_for(exc), exc.code, exc.message, rid)
                    await response(scope, receive, send_with_id)
                    return
                receive = capped_receive(receive)
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                logger.opt(exception=exc).error(
                    "unhandled error", path=scope["path"], error=type(exc).__name__
                )
                if not started:
                    response = error_response(
                        500,
                        "internal_error",
                        f"internal error ({type(exc).__name__}); "
                        "quote request_id when reporting it",
                        rid,
                    )
                    await response(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - start
                path_label = str(getattr(scope.get("route"), "path", "unmatched"))
                method = scope["method"]
                known = method in _METHODS
                _observe(method if known else "OTHER", path_label, status, elapsed)
                if scope["path"] not in _QUIET:
                    # Not through loguru (~30 µs a line, a quarter of a cached hit): the same
                    # line, built with f-strings, so a path with "{...}" is data, not a format.
                    access_line(
                        method if known else printable(method, limit=_METHOD_LOG_MAX),
                        printable(scope["path"], limit=_PATH_LOG_MAX),
                        status,
                        elapsed * 1000,
                        rid,
                    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
