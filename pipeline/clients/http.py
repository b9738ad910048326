"""One way to call an outside HTTP API: per-call timeout, bounded retries, typed errors.

Datura and Chutes fail in the same ways (429 under load, 5xx while instances
start, slow answers, dropped connections), so both clients share this helper
instead of each growing its own retry loop. What is worth retrying is decided
here once: 408/425/429/5xx, timeouts and connection errors are; 401/402/403/404/
422 and other 4xx are not, because asking again cannot change the answer.

Secrets never reach an exception message or a log line: callers pass the values
to scrub, and only the method, the URL path and the status are logged.

A process may register one `RequestObserver` (the pipeline's Prometheus metrics do): it
hears of every attempt (service, outcome, seconds) and of every call that failed for good.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol, Self

import aiohttp
import orjson
from loguru import logger
from multidict import CIMultiDict
from yarl import URL

from shared.backoff import Backoff
from shared.errors import AppError

RETRYABLE_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS: Final = frozenset({301, 308})
MAX_REDIRECTS: Final = 5
_DETAIL_MAX: Final = 300
DEFAULT_MAX_BODY_BYTES: Final = 2 * 1024 * 1024  # HTTP_MAX_BODY_BYTES
_READ_CHUNK: Final = 64 * 1024
_MASK: Final = "***"
# Each wait is scaled by a random factor in [1 - HTTP_JITTER, 1].
HTTP_JITTER: Final = 0.5

Sleep = Callable[[float], Awaitable[None]]


class RequestObserver(Protocol):
    """Told about outside-API traffic; must be cheap and must not raise (errors are ignored)."""

    def attempt(self, service: str, outcome: str, seconds: float) -> None:
        """One HTTP attempt ended; `outcome` is `attempt_outcome(error)`."""

    def failed(self, service: str, error: str) -> None:
        """A call failed for good (retries spent or not retryable); `error` is its code."""


_observer: RequestObserver | None = None


def set_request_observer(observer: RequestObserver | None) -> RequestObserver | None:
    """Register the process's observer (None removes it); returns the previous one."""
    global _observer
    previous, _observer = _observer, observer
    return previous


class ExternalAPIError(AppError):
    """An outside API could not give us what we asked for.

    `retryable` tells the caller whether trying again later may succeed (the
    stage worker redelivers) or not (fallback / dead letter right away).
    `upstream_status` is the outside API's HTTP status, None when no response
    arrived (timeout, connection error).
    """

    code = "external_api_error"

    def __init__(
        self,
        service: str,
        upstream_status: int | None,
        detail: str,
        *,
        retryable: bool,
        attempts: int = 1,
        transport: str | None = None,
    ) -> None:
        label = f"HTTP {upstream_status}" if upstream_status is not None else "no response"
        super().__init__(f"{service}: {label}: {detail}")
        self.service = service
        self.upstream_status = upstream_status
        self.detail = detail
        self.retryable = retryable
        self.attempts = attempts
        # "timeout" or "connection_error" when no response arrived, else None.
        self.transport = transport


class AuthError(ExternalAPIError):
    """401/403: the key is missing, wrong or revoked. Retrying cannot help."""

    code = "external_auth_error"


class QuotaError(ExternalAPIError):
    """402: the account is out of credit or quota. Retrying cannot help until someone pays."""

    code = "external_quota_error"


class NotConfiguredError(ExternalAPIError):
    """No API key is configured, so no request was sent."""

    code = "external_not_configured"


class InvalidResponseError(ExternalAPIError):
    """A 2xx whose body is not the JSON shape the API documents."""

    code = "external_invalid_response"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how long to wait between tries.

    `max_retries` counts retries after the first try. The waits follow the shared
    backoff (`shared.backoff.Backoff`): `min(backoff_max_s, backoff_base_s * 2**n)`
    before retry n (0-based), scaled by a random factor in [0.5, 1] so that many
    workers hit by one outage do not retry in step; a `Retry-After` from the server
    wins when longer, capped at `retry_after_max_s` so one header cannot park a
    worker for an hour.
    """

    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    _schedule: Backoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schedule = Backoff(
            first_s=self.backoff_base_s,
            cap_s=self.backoff_max_s,
            jitter=HTTP_JITTER,
            retry_after_max_s=self.retry_after_max_s,
        )
        object.__setattr__(self, "_schedule", schedule)

    def backoff(self, retry_index: int, retry_after_s: float | None = None) -> float:
        return self._schedule.delay(retry_index, retry_after_s)


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


def make_session(*, limit: int = 32, limit_per_host: int = 16) -> aiohttp.ClientSession:
    """The one ClientSession a process should use for outside APIs.

    Bounded pools: a burst of trades queues on the connector instead of opening
    hundreds of TLS connections and being rate limited for it. DNS is cached
    because both APIs sit behind a handful of stable hosts.
    """
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=300, keepalive_timeout=30
    )
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        raise_for_status=False,
    )


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Mask every secret in `text` (an error body could echo the key we sent)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text


def error_detail(body: bytes, secrets: Sequence[str] = ()) -> str:
    """A short human-readable reason from an error body.

    Both APIs answer `{"detail": ...}` (a string, a FastAPI validation list, or
    an object with `message`); Datura's 402 answers `{"error": ...}`; proxies
    answer plain text or HTML. Whatever it is, keep it short and secret-free.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        found = data.get("detail", data.get("error", data.get("message")))
        if isinstance(found, dict):
            found = found.get("message", found)
        if isinstance(found, list):
            found = "; ".join(_validation_item(item) for item in found)
        if found is not None:
            text = found if isinstance(found, str) else orjson.dumps(found).decode()
    text = " ".join(text.split())
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 1] + "…"
    return scrub(text, secrets) or "(empty body)"


def _validation_item(item: Any) -> str:
    if isinstance(item, dict):
        loc = ".".join(str(part) for part in item.get("loc", []))
        return f"{loc}: {item.get('msg', '')}".strip(": ")
    return str(item)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def error_for_status(
    service: str, status: int, detail: str, *, attempts: int = 1
) -> ExternalAPIError:
    """Map a non-2xx status to the typed error the callers branch on."""
    if status in (401, 403):
        return AuthError(service, status, detail, retryable=False, attempts=attempts)
    if status == 402:
        return QuotaError(service, status, detail, retryable=False, attempts=attempts)
    retryable = status in RETRYABLE_STATUSES or status >= 500
    return ExternalAPIError(service, status, detail, retryable=retryable, attempts=attempts)


def attempt_outcome(error: ExternalAPIError | None) -> str:
    """A bounded label for how one attempt ended (metrics; never carries user data)."""
    if error is None:
        return "ok"
    if isinstance(error, InvalidResponseError):
        return "invalid_response"
    status = error.upstream_status
    if status is None:
        return error.transport or "connection_error"
    if status == 429:
        return "http_429"
    if 300 <= status < 600:
        return f"http_{status // 100}xx"
    return "http_other"


def _notify_attempt(service: str, error: ExternalAPIError | None, started: float) -> None:
    observer = _observer
    if observer is None:
        return
    try:
        observer.attempt(service, attempt_outcome(error), time.monotonic() - started)
    except Exception:  # a metrics hook must never break a request
        logger.opt(exception=True).debug("request observer failed")


def _notify_failed(service: str, error: ExternalAPIError) -> None:
    observer = _observer
    if observer is None:
        return
    try:
        observer.failed(service, error.code)
    except Exception:
        logger.opt(exception=True).debug("request observer failed")


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
            _notify_attempt(service, error, tried)
            if attempts > policy.max_retries:
                logger.bind(service=service, attempts=attempts).warning(
                    "{} {} {} gave up: {}", service, method, path, error.message
                )
                _notify_failed(service, error)
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
            _notify_attempt(service, error, tried)
            _notify_failed(service, error)
            raise
        _notify_attempt(service, None, tried)
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


class SessionOwner:
    """A client's aiohttp session: a shared one passed in (the caller closes it) or its own,
    created on first use and closed by `close()`."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = make_session()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Close the session if this client created it; a passed-in session is the owner's."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
