"""`python -m gateway [serve] | tokens create NAME [--scopes read,trade] | tokens list |
tokens revoke NAME`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from tortoise import Tortoise

from gateway.limits import MAX_HEADER_BYTES, MAX_PATH_BYTES, MAX_QUERY_BYTES
from gateway.scopes import ALL_SCOPES, format_scopes
from gateway.tokens import TokenError, create_token, list_tokens, revoke_token, scopes_arg
from shared.db.config import tortoise_config
from shared.db.migrate import ensure_sqlite_dir
from shared.settings import Settings, get_settings

# h11's bound on a request head (request line and headers): room for the app's own limits
# (a path, a query and headers each at their cap) so it still answers those with its JSON
# 414/431; anything larger gets uvicorn's 400 without being buffered.
MAX_HEAD_BYTES = MAX_HEADER_BYTES + MAX_PATH_BYTES + MAX_QUERY_BYTES + 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP gateway (uvicorn on HOST:PORT)")
    tokens = sub.add_parser("tokens", help="manage stored API tokens")
    tsub = tokens.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="create a token (printed once, as the last line)")
    create.add_argument("name")
    create.add_argument(
        "--scopes",
        default=None,
        help=f"comma-separated, from {', '.join(ALL_SCOPES)} (default: read)",
    )
    tsub.add_parser("list", help="list tokens (names, prefixes and scopes only)")
    tsub.add_parser("revoke", help="revoke a token").add_argument("name")
    return parser


async def _with_db(fn: Callable[[], Awaitable[int]]) -> int:
    config = tortoise_config(get_settings())
    ensure_sqlite_dir(config["connections"]["default"])
    await Tortoise.init(config=config)
    try:
        return await fn()
    finally:
        await Tortoise.close_connections()


async def _tokens(action: str, name: str | None, scopes: str | None) -> int:
    try:
        if action == "create":
            assert name is not None
            granted = scopes_arg(scopes)
            token = await create_token(name, granted)
            print(
                f"created token {name!r} with scopes {format_scopes(granted)}. "
                f"It is shown only this once:\n{token}"
            )
        elif action == "list":
            for info in await list_tokens():
                state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
                print(
                    f"{info.name}\t{info.prefix}…\t{info.scopes}\t"
                    f"{info.created_at:%Y-%m-%d %H:%M}\t{state}"
                )
        else:
            assert name is not None
            await revoke_token(name)
            print(f"revoked token {name!r} (stops working within AUTH_CACHE_TTL_S everywhere)")
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How `gateway serve` runs uvicorn.

    - Proxy headers: uvicorn believes X-Forwarded-For from 127.0.0.1 by default, so any local
      process (or a co-hosted proxy that passes the header through) could choose the client
      address the failed-auth throttle counts. They are believed only from the proxies named
      in FORWARDED_ALLOW_IPS; with it empty (the default) they are ignored.
    - Parser: HTTP_PARSER. h11 refuses a request head larger than MAX_HEAD_BYTES before it
      reaches the app; httptools buffers any size (a reverse proxy must bound it).
    """
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "http": settings.http_parser,
        "proxy_headers": False,
    }
    trusted = settings.forwarded_allow_ips.strip()
    if trusted:
        options.update(proxy_headers=True, forwarded_allow_ips=trusted)
    if settings.http_parser == "h11":
        options["h11_max_incomplete_event_size"] = MAX_HEAD_BYTES
    return options


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in (None, "serve"):
        import uvicorn

        uvicorn.run("gateway.app:create_app", factory=True, **uvicorn_options(get_settings()))
        return 0
    return asyncio.run(
        _with_db(
            lambda: _tokens(args.action, getattr(args, "name", None), getattr(args, "scopes", None))
        )
    )


if __name__ == "__main__":
    sys.exit(main())
