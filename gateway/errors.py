"""The one mapping from errors to HTTP: an error's `code` to its status, and every error
answer to the JSON shape `{"error": {code, message, request_id}}`.

Errors carry codes only (shared.errors and its subclasses in gateway/, pipeline/, shared/);
no other module decides the status an error is answered with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from loguru import logger
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from shared.errors import (
    AppError,
    ChainBadResponse,
    RateLimited,
    StorageUnsupported,
    Unauthorized,
)


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable, machine-readable: `unauthorized`, `insufficient_scope`, "
        "`not_found`, `validation_error`, `rate_limited`, `redis_unavailable`, `chain_timeout`, …",
        examples=["validation_error"],
    )
    message: str = Field(description="For people; may change between releases.")
    request_id: str = Field(description="The request's X-Request-ID; quote it when reporting.")


class ErrorBody(BaseModel):
    """The shape of every error answer, documented in OpenAPI from the same place."""

    error: ErrorDetail


# Every AppError code in use and the status it is answered with (a test walks all subclasses
# of AppError and checks each code is here). An unknown code would answer 500.
STATUS_BY_CODE: Final[Mapping[str, int]] = MappingProxyType(
    {
        "bad_request": 400,  # Content-Length is not a number (gateway.limits)
        "unauthorized": 401,
        "insufficient_scope": 403,
        "not_found": 404,
        "payload_too_large": 413,
        "uri_too_long": 414,
        "validation_error": 422,
        "rate_limited": 429,
        "headers_too_large": 431,
        "internal_error": 500,
        # An outside API (Datura, Chutes) failed us: a bad gateway, whatever it answered.
        "external_api_error": 502,
        "external_auth_error": 502,
        "external_quota_error": 502,
        "external_not_configured": 502,
        "external_invalid_response": 502,
        # A dependency is down or cannot serve this request now.
        "unavailable": 503,
        "redis_unavailable": 503,
        "database_unavailable": 503,
        "schema_outdated": 503,
        "auth_busy": 503,  # a global load shed, not the caller's fault: not a 429
        "chain_error": 503,
        "chain_unavailable": 503,
        "chain_bad_response": 503,
        "storage_unsupported": 503,
        "chain_timeout": 504,
    }
)


def status_for(exc: AppError) -> int:
    """The HTTP status an error is answered with."""
    return STATUS_BY_CODE.get(exc.code, 500)


# Headers an error answer always carries, documented with the status that carries them.
ERROR_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'The scheme to use: `Bearer realm="taostake"`.',
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}

# Refused on the request line and headers alone, before any route or token check (gateway.limits).
PRE_AUTH = {
    414: "`uri_too_long`: the path or the query string is longer than 2048 bytes",
    431: "`headers_too_large`: the request headers are larger than 16 KiB",
}
BODY_ERRORS = {
    400: "`bad_request`: the body cannot be parsed at all (e.g. it is not UTF-8)",
    413: "`payload_too_large`: the request body is larger than 64 KiB",
}


def documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries that carry the real error schema (and its headers)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status, text in descriptions.items():
        entry: dict[str, Any] = {"model": ErrorBody, "description": text}
        if status in ERROR_HEADERS:
            entry["headers"] = ERROR_HEADERS[status]
        responses[status] = entry
    return responses


def error_response(
    status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _rid(request: Request) -> str:
    rid: str = request.scope.get("state", {}).get("request_id", "")
    return rid


# Errors whose message quotes what the chain node or its SDK said (which may name the node's
# URL, or carry whatever the node sent): a client reads this text instead, and the message is
# logged with the request id.
_QUOTES_UPSTREAM: Final = MappingProxyType(
    {
        ChainBadResponse.code: "the chain node's answer could not be used",
        StorageUnsupported.code: "the chain does not hold the storage item this read needs",
    }
)


def public_message(exc: AppError) -> str:
    """What a client may read of `exc`: its message, unless that quotes the chain node."""
    public = _QUOTES_UPSTREAM.get(exc.code)
    if public is None:
        return exc.message
    logger.warning("chain error answered", code=exc.code, error=exc.message)
    return f"{public}; quote request_id when reporting it"


async def app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="taostake"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    return error_response(status_for(exc), exc.code, public_message(exc), _rid(request), headers)


def _location(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")]
    return ".".join(loc) or "request"


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{_location(err)}: {err.get('msg', 'invalid')}" for err in exc.errors()]
    return error_response(422, "validation_error", "; ".join(problems), _rid(request))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, AppError):
        # FastAPI wraps any error raised while reading a body (the body cap) in a 400.
        return await app_error(request, exc.__cause__)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    # Keeps the exception's headers: a 405 carries `Allow` (RFC 9110), set by the router.
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405 and headers is not None and "Allow" in headers:
        headers["Allow"] = _allowed_methods(request) or headers["Allow"]
    return error_response(exc.status_code, code, str(exc.detail), _rid(request), headers)


_TEMPLATE_PARAM = re.compile(r"\\\{[^/]+?\\\}")
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _allowed_methods(request: Request) -> str:
    """Every method the app documents for this path. Starlette's 405 names the methods of the
    first route matching the path only, but one path may have several routes (GET and POST
    /api/v1/trades); empty for a path the document does not list."""
    methods: set[str] = set()
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    for template, operations in paths.items():
        pattern = _TEMPLATE_PARAM.sub("[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {name.upper() for name in operations if name in _HTTP_METHODS}
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
