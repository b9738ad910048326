"""Response headers for answers that carry a caller's data and for the console page."""

from __future__ import annotations

from fastapi import Response

# Answers to authenticated reads are the caller's own data: no cache keeps a copy.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def no_store(response: Response) -> None:
    """Router dependency: every answer of the router is marked `Cache-Control: no-store`."""
    response.headers.update(NO_STORE)
