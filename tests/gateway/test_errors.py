"""Error codes to HTTP statuses: one table in gateway/errors.py, complete for every code in use."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from gateway import errors
from gateway.auth import AuthBusy
from gateway.errors import STATUS_BY_CODE, status_for
from gateway.limits import BadContentLength, HeadersTooLarge, PayloadTooLarge, UriTooLong
from gateway.scopes import InsufficientScope
from pipeline.clients.http import (
    AuthError,
    ExternalAPIError,
    InvalidResponseError,
    NotConfiguredError,
    QuotaError,
)
from shared.chain.staking_types import ChainNotConnected
from shared.db.schema import SchemaOutdated
from shared.errors import (
    AppError,
    ChainBadResponse,
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    DatabaseUnavailable,
    DependencyUnavailable,
    InvalidInput,
    NotFound,
    RateLimited,
    RedisUnavailable,
    StorageUnsupported,
    Unauthorized,
)

PACKAGES = ("gateway", "pipeline", "shared")


def _import_everything() -> None:
    """Import every runtime module, so that every AppError subclass is defined."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                importlib.import_module(info.name)


def _subclasses(cls: type[AppError]) -> Iterator[type[AppError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def all_error_classes() -> list[type[AppError]]:
    _import_everything()
    return [AppError, *(c for c in _subclasses(AppError) if c.__module__.startswith(PACKAGES))]


class TestTheOneMapping:
    def test_every_code_in_use_has_a_status(self) -> None:
        unmapped = {
            f"{cls.__module__}.{cls.__qualname__}: {cls.code}"
            for cls in all_error_classes()
            if cls.code not in STATUS_BY_CODE
        }
        assert not unmapped, f"add these codes to gateway.errors.STATUS_BY_CODE: {unmapped}"

    def test_every_mapped_code_is_in_use(self) -> None:
        used = {cls.code for cls in all_error_classes()}
        assert set(STATUS_BY_CODE) - used == set()

    def test_the_walk_finds_the_errors_of_every_package(self) -> None:
        found = set(all_error_classes())
        assert {SchemaOutdated, ChainNotConnected, AuthBusy, UriTooLong, QuotaError} <= found

    def test_errors_know_nothing_of_http(self) -> None:
        with_status = [c.__qualname__ for c in all_error_classes() if hasattr(c, "status")]
        assert with_status == []

    def test_statuses_are_error_statuses(self) -> None:
        assert all(400 <= status < 600 for status in STATUS_BY_CODE.values())

    def test_the_table_cannot_be_changed_at_run_time(self) -> None:
        with pytest.raises(TypeError):
            STATUS_BY_CODE["chain_timeout"] = 200  # type: ignore[index]

    @pytest.mark.parametrize(
        ("error", "status"),
        [
            # The statuses these errors answered with when they carried them themselves.
            (AppError("boom"), 500),
            (Unauthorized("no token"), 401),
            (InsufficientScope("needs trade"), 403),
            (NotFound("no such trade"), 404),
            (InvalidInput("netuid: out of range"), 422),
            (RateLimited("slow down", retry_after_s=3), 429),
            (AuthBusy("busy", retry_after_s=1), 503),
            (BadContentLength("Content-Length is not a number"), 400),
            (PayloadTooLarge("body"), 413),
            (UriTooLong("path"), 414),
            (HeadersTooLarge("headers"), 431),
            (DependencyUnavailable("down"), 503),
            (RedisUnavailable("down"), 503),
            (DatabaseUnavailable("down"), 503),
            (SchemaOutdated("migrate"), 503),
            (ChainError("failed"), 503),
            (ChainUnavailable("lost"), 503),
            (ChainNotConnected("not yet"), 503),
            (ChainBadResponse("garbled"), 503),
            (StorageUnsupported("no such item"), 503),
            (ChainTimeout("slow"), 504),
            (ExternalAPIError("datura", 500, "oops", retryable=True), 502),
            (AuthError("datura", 401, "bad key", retryable=False), 502),
            (QuotaError("datura", 402, "pay", retryable=False), 502),
            (NotConfiguredError("chutes", None, "no key", retryable=False), 502),
            (InvalidResponseError("chutes", 200, "not JSON", retryable=False), 502),
        ],
        ids=lambda value: type(value).__name__ if isinstance(value, AppError) else str(value),
    )
    def test_status_for(self, error: AppError, status: int) -> None:
        assert status_for(error) == status

    def test_a_subclass_inherits_its_parents_code_and_status(self) -> None:
        error = ChainNotConnected("not yet")
        assert error.code == "chain_unavailable" and status_for(error) == 503


def _app(error: AppError) -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/fail")
    async def fail() -> None:
        raise error

    return app


async def _get(error: AppError) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(error))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/fail")


class TestHandler:
    async def test_an_error_answers_with_its_mapped_status_and_code(self) -> None:
        response = await _get(ChainTimeout("chain did not answer within 3s"))
        assert response.status_code == 504
        assert response.json() == {
            "error": {
                "code": "chain_timeout",
                "message": "chain did not answer within 3s",
                "request_id": "",
            }
        }

    async def test_a_load_shed_is_503_with_retry_after(self) -> None:
        response = await _get(AuthBusy("too many token checks", retry_after_s=1))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "auth_busy"

    async def test_rate_limited_is_429_with_retry_after(self) -> None:
        response = await _get(RateLimited("slow down", retry_after_s=7))
        assert (response.status_code, response.headers["Retry-After"]) == (429, "7")

    async def test_unauthorized_names_the_scheme(self) -> None:
        response = await _get(Unauthorized("missing token"))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="taostake"'
        assert "Retry-After" not in response.headers
