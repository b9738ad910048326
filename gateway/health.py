"""Liveness, readiness (Redis, DB, chain) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from tortoise import connections

from gateway.deps import StateDep
from shared.db.schema import SchemaOutdated, schema_status

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0
READY_CHAIN_EVERY_S = 1.0


class Liveness(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    """One readiness check; the other fields depend on the check (block, migrations, …)."""

    model_config = ConfigDict(extra="allow")
    ok: bool
    error: str | None = Field(None, description="Why the check failed (an exception name or code).")


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check] = Field(description="`redis`, `database`, `schema` and `chain`.")


@router.get("/healthz", summary="Liveness: the process answers", response_model=Liveness)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(coro: Any) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
    except SchemaOutdated as exc:
        return {"ok": False, "error": exc.code, "detail": exc.message}
    except Exception as exc:  # readiness reports any failure instead of raising
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, **(detail or {})}


@router.get(
    "/readyz",
    summary="Readiness: Redis, database, schema and chain",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: a check failed"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    async def redis() -> None:
        await state.redis.ping()

    async def database() -> None:
        await connections.get("default").execute_query("SELECT 1")

    async def schema() -> dict[str, Any]:
        status = await schema_status()
        problem = status.problem()
        if problem is not None:
            raise SchemaOutdated(problem)
        return {"migrations": len(status.applied)}

    async def chain() -> dict[str, Any]:
        status = await state.chain.status()
        if not status.connected:
            raise ConnectionError(status.detail)
        return {"block": status.block, "storage": status.storage, "network": status.network}

    async def probe_chain() -> dict[str, Any]:
        result = await _check(chain())
        state.chain_check = (time.monotonic(), result)
        return result

    async def chain_at_most_once_a_second() -> dict[str, Any]:
        # A probe hammering /readyz must not turn into chain reads: a fresh result is reused,
        # and concurrent callers without one share a single read (single flight).
        now = time.monotonic()
        if state.chain_check is not None and now - state.chain_check[0] < READY_CHAIN_EVERY_S:
            return state.chain_check[1]
        return await state.chain_probe.do("chain", probe_chain)

    checks = dict(
        zip(
            ("redis", "database", "schema", "chain"),
            await asyncio.gather(
                _check(redis()), _check(database()), _check(schema()), chain_at_most_once_a_second()
            ),
            strict=True,
        )
    )
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
