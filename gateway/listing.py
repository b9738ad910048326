"""What the owner-scoped read routes share: their query parameters and error answers, whose
rows a caller sees, and how a newest-first page is cut and continued.

A caller sees the rows of the trades it requested; with `admin`, every caller's. Another
owner's row is answered like a missing one (absent from a page, 404 alone), so ids cannot be
probed. A page holds at most `limit` rows; its `next_cursor` names the last of them, and the
next page starts below it, so rows inserted meanwhile never split or repeat a page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from tortoise.models import Model
from tortoise.queryset import QuerySet

from gateway.deps import SS58_CONSTRAINTS, SS58_DESCRIPTION, SS58_EXAMPLE, ReaderDep, hotkey_param
from gateway.errors import documented
from gateway.scopes import ADMIN, Caller

C = TypeVar("C")
M = TypeVar("M", bound=Model)
R = TypeVar("R")

COMMON_ERRORS = {
    401: "`unauthorized`: missing, malformed, unknown or revoked token",
    422: "`validation_error`: an invalid parameter or body field (the message names it)",
    429: "`rate_limited`: the token's rate limit, or too many failed authentications from "
    "this address; see Retry-After",
    503: "`database_unavailable` or `redis_unavailable`: a dependency cannot answer; "
    "`auth_busy`: too many token checks in progress (see Retry-After)",
}
READ_ERRORS = documented({**COMMON_ERRORS, 403: "`insufficient_scope`: the token lacks `read`"})
OWN_TRADES = (
    "Scope: `read`. Only the caller's own trades (those it requested); "
    "every caller's with `admin` as well."
)

ID_CURSOR_PATTERN = "^[0-9]{1,10}$"
MAX_ROW_ID = 2**31 - 1  # row ids are 32-bit integers: no row lies beyond it
DEFAULT_LIMIT = 50


def hotkey_query(lead: str = "Hotkey.") -> Any:
    """The declaration of an optional SS58 hotkey filter; `hotkey_param` checks its checksum."""
    return Query(
        description=f"{lead} {SS58_DESCRIPTION}", examples=[SS58_EXAMPLE], **SS58_CONSTRAINTS
    )


NetuidQuery = Annotated[int | None, Query(ge=0, le=65535, description="Subnet id.")]
HotkeyQuery = Annotated[str | None, hotkey_query()]
LimitQuery = Annotated[int, Query(ge=1, le=200, description="Page size.")]
IdCursorQuery = Annotated[
    str | None,
    Query(
        pattern=ID_CURSOR_PATTERN,
        description="`next_cursor` of the previous page (a decimal number); omit it for "
        "the first page.",
        examples=["1234"],
    ),
]


def visible_owner(caller: Caller) -> str | None:
    """Whose rows `caller` may read: its own, or None (every owner's) with `admin`."""
    return None if ADMIN in caller.scopes else caller.owner


def id_cursor(cursor: str | None) -> int | None:
    """The row id a page continues below, from a cursor that matched ID_CURSOR_PATTERN.

    A cursor beyond every row id reads as none: the same page as the first, not an error.
    """
    after = None if cursor is None else int(cursor)
    return None if after is None or after > MAX_ROW_ID else after


def narrowed(query: QuerySet[M], **filters: object) -> QuerySet[M]:
    """`query` filtered by every one of `filters` that has a value; None stands for any."""
    return query.filter(**{name: value for name, value in filters.items() if value is not None})


@dataclass(frozen=True, slots=True)
class Listing(Generic[C]):
    """One page of an owner-scoped listing, as asked for: the hotkey is checked and
    normalized, the cursor parsed (`C` is its type), `owner` None for an admin."""

    owner: str | None
    netuid: int | None
    hotkey: str | None
    limit: int
    cursor: C | None

    @classmethod
    def of(
        cls,
        caller: Caller,
        *,
        netuid: int | None = None,
        hotkey: str | None,
        limit: int,
        cursor: C | None,
    ) -> Listing[C]:
        checked = None if hotkey is None else hotkey_param(hotkey)
        return cls(visible_owner(caller), netuid, checked, limit, cursor)

    def scoped(
        self,
        query: QuerySet[M],
        *,
        owner_field: str = "trade__requested_by",
        hotkey_field: str = "hotkey",
        **filters: object,
    ) -> QuerySet[M]:
        """`query` narrowed to the caller's rows, the netuid and hotkey asked for, and
        `filters` (None: any). The field names say where a model keeps owner and hotkey."""
        mine = {owner_field: self.owner, "netuid": self.netuid, hotkey_field: self.hotkey}
        return narrowed(query, **mine, **filters)

    def cut(self, rows: Sequence[R], cursor_of: Callable[[R], str]) -> tuple[list[R], str | None]:
        """This page out of `rows` (newest first, from the cursor on; `limit + 1` of them
        are enough to know whether another page follows) and the cursor of the next page,
        None on the last."""
        page = list(rows[: self.limit])
        return page, cursor_of(page[-1]) if len(rows) > self.limit else None


async def id_listing(
    caller: ReaderDep,
    netuid: NetuidQuery = None,
    hotkey: HotkeyQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: IdCursorQuery = None,
) -> Listing[int]:
    return Listing.of(caller, netuid=netuid, hotkey=hotkey, limit=limit, cursor=id_cursor(cursor))


# A page of rows paged by their id: the `read` scope, a netuid and hotkey filter, the id cursor.
IdListingDep = Annotated[Listing[int], Depends(id_listing)]
