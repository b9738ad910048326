"""Hostile-input limits enforced before any token check, cache lookup or body parse.

A request that is too large is refused on its headers alone: nothing it carries is read,
parsed or remembered. Failed token checks are throttled per client address, so guessing
tokens cannot turn into a stream of database lookups.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from functools import lru_cache
from typing import Final

from starlette.types import Message, Receive, Scope

from shared.errors import AppError

MAX_BODY_BYTES: Final = 64 * 1024
MAX_QUERY_BYTES: Final = 2048
MAX_PATH_BYTES: Final = 2048
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_TRACKED_CLIENTS: Final = 10_000


class RequestRefused(AppError):
    """The request line, headers or body break a limit; the subclass (its `code`) says which."""


class UriTooLong(RequestRefused):
    code = "uri_too_long"


class HeadersTooLarge(RequestRefused):
    code = "headers_too_large"


class PayloadTooLarge(RequestRefused):
    code = "payload_too_large"


class BadContentLength(RequestRefused):
    code = "bad_request"


def check_head(scope: Scope) -> None:
    """Refuse on the request line and headers alone (no body read yet)."""
    raw_path = scope.get("raw_path")
    path_bytes = len(raw_path) if raw_path is not None else len(scope["path"].encode())
    if path_bytes > MAX_PATH_BYTES:
        raise UriTooLong(f"path longer than {MAX_PATH_BYTES} bytes")
    if len(scope["query_string"]) > MAX_QUERY_BYTES:
        raise UriTooLong(f"query string longer than {MAX_QUERY_BYTES} bytes")
    size = 0
    declared: int | None = None
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise BadContentLength("Content-Length is not a number") from None
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"request headers larger than {MAX_HEADER_BYTES} bytes")
    if declared is not None and declared > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")


def capped_receive(receive: Receive) -> Receive:
    """`receive` that raises `PayloadTooLarge` once a body without a (truthful)
    Content-Length passes MAX_BODY_BYTES, before the rest is buffered anywhere."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
        return message

    return wrapped


@lru_cache(maxsize=MAX_TRACKED_CLIENTS)  # every authenticated request asks; addresses repeat
def client_key(host: str | None) -> str:
    """The throttle's key for a client address: the address itself for IPv4 (an IPv4-mapped
    IPv6 address counts as its IPv4 address), its /64 for IPv6, since one host commonly
    holds a whole /64 and could otherwise rotate through it."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP (a unix socket, a test client): keyed as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailedAuthThrottle:
    """At most `per_min` failed token checks per client (`client_key`) per rolling minute.

    Only tokens that would cost a stored-token lookup are throttled (gateway.auth): a token
    already known valid is never refused here. In-process and bounded (the least recently
    failing clients are forgotten first). The address is the connection's peer; X-Forwarded-For
    is believed only from the proxies named in FORWARDED_ALLOW_IPS (`gateway serve`).
    """

    def __init__(self, per_min: int, *, window_s: float = 60.0) -> None:
        self._limit = per_min
        self._window = window_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        times = self._recent(client, time.monotonic())
        if len(times) < self._limit:
            return 0.0
        return max(0.001, times[0] + self._window - time.monotonic())

    def failed(self, client: str) -> None:
        now = time.monotonic()
        times = self._recent(client, now)
        times.append(now)
        self._failures[client] = times[-self._limit :]
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_TRACKED_CLIENTS:
            self._failures.popitem(last=False)

    def _recent(self, client: str, now: float) -> list[float]:
        times = self._failures.get(client)
        if not times:
            return []
        cutoff = now - self._window
        return [t for t in times if t > cutoff]
