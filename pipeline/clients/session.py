"""The aiohttp session outside-API clients share, and who closes it."""

from __future__ import annotations

from typing import Self

import aiohttp
import orjson


def make_session(*, limit: int = 32, limit_per_host: int = 16) -> aiohttp.ClientSession:
    """The one ClientSession a process should use for outside APIs.

    Bounded pools: a burst of trades queues on the connector instead of opening
    hundreds of TLS connections and being rate limited for it. DNS is cached
    because both APIs sit behind a handful of stable hosts.
    """
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=300, keepalive_timeout=30
    )
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        raise_for_status=False,
    )


class SessionOwner:
    """A client's aiohttp session: a shared one passed in (the caller closes it) or its own,
    created on first use and closed by `close()`."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = make_session()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Close the session if this client created it; a passed-in session is the owner's."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
