"""What an outside API's failure looks like to the pipeline: typed errors, secret-free details.

What is worth retrying is decided here once: 408/425/429/5xx, timeouts and connection
errors are; 401/402/403/404/422 and other 4xx are not, because asking again cannot change
the answer. Secrets never reach an error's message: callers pass the values to scrub.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Final

import orjson

from shared.errors import AppError

RETRYABLE_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_DETAIL_MAX: Final = 300
_MASK: Final = "***"


@dataclass(eq=False)
class ExternalAPIError(AppError):
    """An outside API could not give us what we asked for.

    `retryable` tells the caller whether trying again later may succeed (the
    stage worker redelivers) or not (fallback / dead letter right away).
    `upstream_status` is the outside API's HTTP status, None when no response
    arrived (timeout, connection error); `transport` then says which
    ("timeout" or "connection_error").
    """

    code = "external_api_error"

    service: str
    upstream_status: int | None
    detail: str
    _: KW_ONLY
    retryable: bool
    attempts: int = 1
    transport: str | None = None

    def __post_init__(self) -> None:
        status = self.upstream_status
        label = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{self.service}: {label}: {self.detail}")


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
