"""The project's exception hierarchy: each error names what went wrong with a stable `code`.

Errors know nothing of HTTP. The gateway maps codes to statuses and the JSON error shape in
one place (`gateway.errors`); the pipeline branches on the classes and logs the codes. A
code is declared on a class, never passed per instance, so every code in use can be listed
by walking the subclasses of `AppError`; the gateway's tests check that it maps each of them.
"""

from __future__ import annotations

from typing import ClassVar


class AppError(Exception):
    """An error with a stable, machine-readable `code` and a `message` for people."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        """The exception's one argument, kept nowhere else (`str(exc)` shows the same)."""
        return str(self.args[0])


class Unauthorized(AppError):
    code = "unauthorized"


class RateLimited(AppError):
    """Refused for now; `retry_after_s` says when asking again may succeed."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidInput(AppError):
    """Input that passed type validation but not a domain check; the message names the field."""

    code = "validation_error"


class NotFound(AppError):
    code = "not_found"


class DependencyUnavailable(AppError):
    code = "unavailable"


class RedisUnavailable(DependencyUnavailable):
    code = "redis_unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    code = "database_unavailable"


class ChainError(AppError):
    """Base of every error raised by shared.chain."""

    code = "chain_error"


class ChainUnavailable(ChainError):
    code = "chain_unavailable"


class ChainTimeout(ChainError):
    code = "chain_timeout"


class ChainBadResponse(ChainError):
    """The node answered, but the SDK could not make sense of the answer (or refused the call)."""

    code = "chain_bad_response"


class StorageUnsupported(ChainError):
    """The connected runtime's metadata lacks the storage item we were asked to read."""

    code = "storage_unsupported"
