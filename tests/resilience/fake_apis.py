"""Datura and Chutes fakes as one process, steerable from another one.

The resilience suite runs every service as a real process, so the outside APIs must be
one too: `python -m tests.resilience.fake_apis` prints `READY <datura_url> <chutes_url>`
and serves until SIGTERM. `POST /_control/status` with `{"status": 503}` makes every
later request of that fake answer 503 (the real error body of that status); `{"status":
200}` restores normal answers. `GET /_control/count` answers how many requests it saw.
`--delay S` makes every answer take S seconds, like a real API's latency (so stages hold
entries long enough to be killed while holding them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from tests.fakes import FakeServer, Reply
from tests.fakes.chutes import FakeChutes
from tests.fakes.datura import FakeDatura

DATURA_KEY = "dt_resilience_key_0001"
CHUTES_KEY = "cpk_resilience_key_0002"
# A clearly positive score, far outside any dead band, so every trade decides to stake.
CHUTES_CONTENT = '{"score": 60, "reason": "upbeat"}'


def _with_control(server: FakeServer, app: web.Application) -> web.Application:
    """Adds the control routes that script `server` from another process."""

    async def set_status(request: web.Request) -> web.Response:
        status = int((await request.json())["status"])
        delay = server.default_reply.delay_s
        server.default_reply = Reply(delay_s=delay) if status == 200 else Reply(status=status)
        return web.json_response({"status": status})

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"requests": server.request_count})

    app.router.add_post("/_control/status", set_status)
    app.router.add_get("/_control/count", count)
    return app


class ControlledDatura(FakeDatura):
    def build_app(self) -> web.Application:
        return _with_control(self, super().build_app())


class ControlledChutes(FakeChutes):
    def build_app(self) -> web.Application:
        return _with_control(self, super().build_app())


async def main(delay_s: float) -> int:
    datura = ControlledDatura(api_key=DATURA_KEY)
    chutes = ControlledChutes(api_key=CHUTES_KEY, content=CHUTES_CONTENT)
    for server in (datura, chutes):
        server.default_reply = Reply(delay_s=delay_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with datura, chutes:
        print(f"READY {datura.base_url} {chutes.base_url}", flush=True)
        await stop.wait()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        parser = argparse.ArgumentParser(prog="python -m tests.resilience.fake_apis")
        parser.add_argument("--delay", type=float, default=0.0, help="seconds per answer")
        sys.exit(asyncio.run(main(parser.parse_args().delay)))
