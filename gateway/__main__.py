"""`python -m gateway [serve [--host H] [--port P]] | tokens create NAME [--scopes read,trade] |
tokens list [--json] | tokens revoke NAME | --version`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from tortoise import Tortoise

from gateway.limits import MAX_HEADER_BYTES, MAX_PATH_BYTES, MAX_QUERY_BYTES
from gateway.scopes import ALL_SCOPES, format_scopes
from gateway.tokens import (
    JSON_KEYS,
    TokenError,
    create_token,
    list_tokens,
    revoke_token,
    scopes_arg,
)
from shared.cli import (
    HelpFormatter,
    add_command_group,
    command_parser,
    json_help,
    port_number,
    print_json,
)
from shared.db.config import tortoise_config
from shared.db.migrate import ensure_sqlite_dir
from shared.settings import Settings, get_settings

# h11's bound on a request head (request line and headers): room for the app's own limits
# (a path, a query and headers each at their cap) so it still answers those with its JSON
# 414/431; anything larger gets uvicorn's 400 without being buffered.
MAX_HEAD_BYTES = MAX_HEADER_BYTES + MAX_PATH_BYTES + MAX_QUERY_BYTES + 1024


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m gateway",
        "The HTTP gateway (Tao dividends, trades) and its API tokens. "
        "Settings come from the environment and .env; with no command it serves.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the HTTP gateway (uvicorn on HOST:PORT)",
        description="Run the HTTP gateway under uvicorn until SIGTERM/SIGINT.",
    )
    serve.add_argument(
        "--host", default=None, help="address to listen on (default: the HOST setting)"
    )
    serve.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="TCP port to listen on (default: the PORT setting)",
    )
    tsub = add_command_group(
        sub,
        "tokens",
        help="manage stored API tokens",
        description="Create, list and revoke the API tokens stored in the database "
        "(only their hashes are kept).",
    )
    create = tsub.add_parser(
        "create",
        help="create a token (printed once, as the last line)",
        description="Create a token and print it once, as the last line of the output.",
    )
    create.add_argument("name", help="the token's name, 1..64 characters without ':'")
    create.add_argument(
        "--scopes",
        default=None,
        help=f"comma-separated, from {', '.join(ALL_SCOPES)} (default: read)",
    )
    listing = tsub.add_parser(
        "list",
        help="list tokens (names, prefixes and scopes only)",
        description="List stored tokens in creation order; never the tokens themselves.",
        epilog=json_help("a JSON array, one object per token", JSON_KEYS),
        formatter_class=HelpFormatter,
    )
    listing.add_argument(
        "--json", action="store_true", help="print a JSON array (keys below) instead of a table"
    )
    revoke = tsub.add_parser(
        "revoke",
        help="revoke a token",
        description="Revoke a token: it stops working within AUTH_CACHE_TTL_S everywhere.",
    )
    revoke.add_argument("name", help="the name of the active token to revoke")
    return parser


async def _with_db(fn: Callable[[], Awaitable[int]]) -> int:
    config = tortoise_config(get_settings())
    ensure_sqlite_dir(config["connections"]["default"])
    await Tortoise.init(config=config)
    try:
        return await fn()
    finally:
        await Tortoise.close_connections()


async def _tokens(args: argparse.Namespace) -> int:
    action, name, scopes = args.action, getattr(args, "name", None), getattr(args, "scopes", None)
    try:
        if action == "create":
            assert name is not None
            granted = scopes_arg(scopes)
            token = await create_token(name, granted)
            print(
                f"created token {name!r} with scopes {format_scopes(granted)}. "
                f"It is shown only this once:\n{token}"
            )
        elif action == "list" and args.json:
            print_json([info.as_json() for info in await list_tokens()])
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

        options = uvicorn_options(get_settings())
        if getattr(args, "host", None) is not None:
            options["host"] = args.host
        if getattr(args, "port", None) is not None:
            options["port"] = args.port
        uvicorn.run("gateway.app:serve_app", factory=True, **options)
        return 0
    return asyncio.run(_with_db(lambda: _tokens(args)))


if __name__ == "__main__":
    sys.exit(main())
