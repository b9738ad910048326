"""Printed by `make run` before the processes start: where to go and how to get a token."""

from __future__ import annotations

import asyncio

from tortoise import Tortoise

from gateway.tokens import create_token
from scripts.signing_key import KEY_FILE, ensure_signing_key
from shared.chain.subtensor import redact_url
from shared.db.config import tortoise_config
from shared.db.models import ApiToken
from shared.settings import get_settings


async def _ensure_token() -> str | None:
    """On a first run with no token anywhere, create one so the newcomer can call the API."""
    settings = get_settings()
    if settings.static_tokens():
        return None
    await Tortoise.init(config=tortoise_config(settings))
    try:
        if await ApiToken.filter(revoked_at=None).exists():
            return None
        # The operator's own first token: it may trade (the endpoint's purpose), not administer.
        return await create_token("make-run", frozenset({"read", "trade"}))
    finally:
        await Tortoise.close_connections()


def main() -> None:
    settings = get_settings()
    token = asyncio.run(_ensure_token())
    url = f"http://{settings.host}:{settings.port}"
    db = "SQLite (./data)" if not settings.database_url else "DATABASE_URL"
    network = redact_url(settings.bittensor_network)
    print(f"\ntaostake: gateway on {url}  (docs {url}/docs)  network={network}")
    print(f"database: {db}   redis: REDIS_URL")
    _, origin = ensure_signing_key(settings)
    where = "EVENT_SIGNING_KEY" if origin == "configured" else f"{KEY_FILE} ({origin})"
    print(f"event signing key: {where}; every process signs and verifies stream events with it")
    if token:
        print(f"created a first API token 'make-run' (scopes read,trade; shown once):\n  {token}")
    print(
        "tokens: set API_TOKENS, or `.venv/bin/python -m gateway tokens create NAME "
        "--scopes read[,trade,admin]`"
    )
    print(
        f'try: curl -H "Authorization: Bearer $TOKEN" "{url}/api/v1/tao_dividends?netuid=18'
        '&trade=false"\n'
    )


if __name__ == "__main__":
    main()
