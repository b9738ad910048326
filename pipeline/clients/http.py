"""One way to call an outside HTTP API: per-call timeout, bounded retries, typed errors.

Datura and Chutes fail in the same ways (429 under load, 5xx while instances
start, slow answers, dropped connections), so both clients share this helper
instead of each growing its own retry loop. This module sends a request and follows its
redirects; beside it, `errors` says what failed and whether a retry may help, `retry` how
long to wait, `observer` who hears of each attempt, `session` which aiohttp session to use.

Secrets never reach an exception message or a log line: callers pass the values
to scrub, and only the method, the URL path and the status are logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import aiohttp
import orjson
from loguru import logger
from multidict import CIMultiDict
from yarl import URL

from pipeline.clients.errors import (
    AuthError,
    ExternalAPIError,
    InvalidResponseError,
    NotConfiguredError,
    QuotaError,
    error_detail,
    error_for_status,
    scrub,
)
from pipeline.clients.observer import notify_attempt, notify_failed
from pipeline.clients.retry import RetryPolicy, parse_retry_after
from pipeline.clients.session import SessionOwner, make_session

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AuthError",
    "ExternalAPIError",
    "HTTPResult",
    "InvalidResponseError",
    "NotConfiguredError",
    "QuotaError",
    "RetryPolicy",
    "SessionOwner",
    "error_detail",
    "error_for_status",
    "make_session",
    "parse_retry_after",
    "request_json",
    "scrub",
]

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS: Final = frozenset({301, 308})
MAX_REDIRECTS: Final = 5
DEFAULT_MAX_BODY_BYTES: Final = 2 * 1024 * 1024  # HTTP_MAX_BODY_BYTES
_READ_CHUNK: Final = 64 * 1024

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HTTPResult:
    """A successful (2xx) response, its body already parsed as JSON.

    `headers` is case-insensitive (proxies and HTTP/2 lowercase header names).
    `permanent_redirect` is the URL a 301/308 moved the endpoint to, so a client
    can go there directly next time.
    """

    status: int
    body: Any
    headers: Mapping[str, str]
    url: str
    attempts: int
    permanent_redirect: str | None = None
    elapsed_s: float = 0.0
    redirects: tuple[str, ...] = field(default_factory=tuple)


class _Retry(Exception):
    """Internal: one try failed in a way worth retrying."""

    def __init__(self, error: ExternalAPIError, retry_after_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    timeout_s: float,
    policy: RetryPolicy,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    json_body: Any = None,
    secrets: Sequence[str] = (),
    trusted_origins: Collection[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    sleep: Sleep = asyncio.sleep,
) -> HTTPResult:
    """Send one logical request; return its parsed 2xx body or raise `ExternalAPIError`.

    Redirects are followed here rather than by aiohttp, because aiohttp drops the
    `Authorization` header when a redirect changes host (rightly: it must not hand
    our key to whoever a Location header names). We re-send it only to the same
    origin or to `trusted_origins` (e.g. Datura's legacy host pointing at the new
    one); any other target is an error, so a key can never leak through a redirect.

    A body larger than `max_body_bytes` is not read past the cap: it is an invalid
    response (not retried), so a hostile or broken upstream cannot exhaust memory.
    """
    attempts = 0
    started = time.monotonic()
    path = URL(url).path
    while True:
        attempts += 1
        tried = time.monotonic()
        try:
            result = await _attempt(
                session,
                method,
                url,
                service=service,
                timeout_s=timeout_s,
                headers=headers,
                params=params,
                json_body=json_body,
                secrets=secrets,
                trusted_origins=trusted_origins,
                attempts=attempts,
                max_body_bytes=max_body_bytes,
            )
        except _Retry as retry:
            error = retry.error
            error.attempts = attempts
            notify_attempt(service, error, tried)
            if attempts > policy.max_retries:
                logger.bind(service=service, attempts=attempts).warning(
                    "{} {} {} gave up: {}", service, method, path, error.message
                )
                notify_failed(service, error)
                raise error from None
            delay = policy.backoff(attempts - 1, retry.retry_after_s)
            logger.bind(service=service, attempt=attempts).info(
                "{} {} {} failed ({}), retrying in {:.2f}s",
                service,
                method,
                path,
                error.message,
                delay,
            )
            await sleep(delay)
            continue
        except ExternalAPIError as error:  # not worth retrying
            notify_attempt(service, error, tried)
            notify_failed(service, error)
            raise
        notify_attempt(service, None, tried)
        return replace(result, elapsed_s=time.monotonic() - started)


async def _attempt(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    timeout_s: float,
    headers: Mapping[str, str] | None,
    params: Mapping[str, str] | None,
    json_body: Any,
    secrets: Sequence[str],
    trusted_origins: Collection[str],
    attempts: int,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> HTTPResult:
    """One try, including the redirect hops it takes. Raises `_Retry` for transient failures."""
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10.0))
    hops: list[str] = []
    permanent: str | None = None
    target = URL(url).update_query(dict(params)) if params else URL(url)
    origins = {str(target.origin()), *trusted_origins}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                async with session.request(
                    method,
                    target,
                    headers=headers,
                    json=json_body,
                    timeout=timeout,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    body = await _read_capped(resp, max_body_bytes, service)
                    if status in REDIRECT_STATUSES and "Location" in resp.headers:
                        if len(hops) >= MAX_REDIRECTS:
                            raise ExternalAPIError(
                                service, status, "too many redirects", retryable=False
                            )
                        next_url = resp.url.join(URL(resp.headers["Location"]))
                        if not next_url.query_string and target.query_string:
                            # A host move that forgets the query would drop the search itself.
                            next_url = next_url.with_query(target.query)
                        if str(next_url.origin()) not in origins:
                            raise ExternalAPIError(
                                service,
                                status,
                                f"redirect to untrusted origin {next_url.origin()}; "
                                "the API key was not sent there",
                                retryable=False,
                            )
                        if method not in ("GET", "HEAD") and status not in (307, 308):
                            raise ExternalAPIError(
                                service,
                                status,
                                f"{method} redirected with {status}; update the base URL",
                                retryable=False,
                            )
                        if status in PERMANENT_REDIRECTS and not hops:
                            permanent = str(next_url.with_query(None))
                        hops.append(str(next_url.with_query(None)))
                        target = next_url
                        continue
                    if 200 <= status < 300:
                        return HTTPResult(
                            status=status,
                            body=_parse_body(service, status, body, secrets),
                            headers=CIMultiDict(resp.headers),
                            url=str(resp.url.with_query(None)),
                            attempts=attempts,
                            permanent_redirect=permanent,
                            redirects=tuple(hops),
                        )
                    error = error_for_status(
                        service, status, error_detail(body, secrets), attempts=attempts
                    )
                    if error.retryable:
                        raise _Retry(error, parse_retry_after(resp.headers.get("Retry-After")))
                    raise error
    except TimeoutError:
        raise _Retry(
            ExternalAPIError(
                service,
                None,
                f"timed out after {timeout_s:g}s",
                retryable=True,
                transport="timeout",
            )
        ) from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        detail = scrub(f"{type(exc).__name__}: {exc}", secrets)
        raise _Retry(
            ExternalAPIError(service, None, detail, retryable=True, transport="connection_error")
        ) from None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, service: str) -> bytes:
    """The body, or `InvalidResponseError` as soon as it is known to exceed `limit` bytes
    (from Content-Length, or while reading: nothing past the cap is buffered)."""

    def too_large(size: str) -> InvalidResponseError:
        return InvalidResponseError(
            service,
            resp.status,
            f"response body over the {limit}-byte cap ({size}); not read",
            retryable=False,
        )

    declared = resp.content_length
    if declared is not None and declared > limit:
        raise too_large(f"Content-Length {declared}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            resp.close()
            raise too_large(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_body(service: str, status: int, body: bytes, secrets: Sequence[str]) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidResponseError(
            service,
            status,
            f"body is not JSON: {error_detail(body, secrets)}",
            retryable=False,
        ) from None
