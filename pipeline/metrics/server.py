"""The exposition endpoint: GET /metrics of this process's registry, per-process and global."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from loguru import logger
from prometheus_client import REGISTRY

from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from aiohttp import web


class MetricsServer:
    """GET /metrics (Prometheus text format) on host:port, stopped within a bound."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/", _index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, shutdown_timeout=1.0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:  # an ephemeral port (tests): report the one the OS chose
            sockets = [s for server in runner.sites for s in _sockets(server)]
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    async def stop(self, *, timeout_s: float = 5.0) -> bool:
        """Close the listener and open scrapes; True when it finished within `timeout_s`."""
        runner, self._runner = self._runner, None
        if runner is None:
            return True
        cleanup = asyncio.ensure_future(runner.cleanup())
        done, _ = await asyncio.wait({cleanup}, timeout=timeout_s)
        if not done:
            await cancel_and_wait([cleanup], timeout_s=1.0)
            return False
        if not cleanup.cancelled() and cleanup.exception() is not None:
            logger.opt(exception=cleanup.exception()).warning("metrics server stop failed")
        return True


def _sockets(site: Any) -> list[Any]:
    server = getattr(site, "_server", None)
    return list(getattr(server, "sockets", None) or [])


async def _metrics(_request: web.Request) -> web.Response:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _index(_request: web.Request) -> web.Response:
    from aiohttp import web

    return web.Response(text="taostake pipeline: metrics at /metrics\n")
