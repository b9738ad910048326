"""The project's exception hierarchy; the gateway maps it to JSON in one handler."""

from __future__ import annotations


class AppError(Exception):
    """An error with a stable code and the HTTP status it maps to."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidInput(AppError):
    """Input that passed type validation but not a domain check; the message names the field."""

    status = 422
    code = "validation_error"


class NotFound(AppError):
    status = 404
    code = "not_found"


class DependencyUnavailable(AppError):
    status = 503
    code = "unavailable"


class RedisUnavailable(DependencyUnavailable):
    code = "redis_unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    code = "database_unavailable"


class ChainError(AppError):
    """Base of every error raised by shared.chain."""

    status = 503
    code = "chain_error"


class ChainUnavailable(ChainError):
    code = "chain_unavailable"


class ChainTimeout(ChainError):
    status = 504
    code = "chain_timeout"


class StorageUnsupported(ChainError):
    """The connected runtime's metadata lacks the storage item we were asked to read."""

    code = "storage_unsupported"
