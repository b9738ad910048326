"""Liveness, readiness (Redis, DB, chain) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from tortoise import connections

from gateway.deps import StateDep

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(coro: Any) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
    except Exception as exc:  # readiness reports any failure instead of raising
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, **(detail or {})}


@router.get("/readyz", summary="Readiness: Redis, database and chain")
async def readyz(state: StateDep) -> JSONResponse:
    async def redis() -> None:
        await state.redis.ping()

    async def database() -> None:
        await connections.get("default").execute_query("SELECT 1")

    async def chain() -> dict[str, Any]:
        status = await state.chain.status()
        if not status.connected:
            raise ConnectionError(status.detail)
        return {"block": status.block, "storage": status.storage, "network": status.network}

    checks = dict(
        zip(
            ("redis", "database", "chain"),
            await asyncio.gather(_check(redis()), _check(database()), _check(chain())),
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
