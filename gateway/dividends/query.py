"""The query of GET /api/v1/tao_dividends: one parser, called by the router's dependency and
by the cache-hit fast path, so both read a query string the same way and refuse the same ones.

The parameters are declared once, as `DividendsParams`: pydantic validates a query with it and
the OpenAPI document lists its fields. A query string is read like FastAPI reads one
(Starlette's `QueryParams`: the last of repeated names wins), and a refusal is FastAPI's own
`RequestValidationError`, so the app's one handler words the 422. A name the route does not
declare is refused, not ignored: the route can trade, and a misspelled opt-out (`Trade=false`,
`trades=0`) must not read as an omitted `trade`, which follows TRADE_BY_DEFAULT.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import QueryParams

from gateway.deps import SS58_CONSTRAINTS, SS58_DESCRIPTION, SS58_EXAMPLE, hotkey_param
from shared.logging import printable
from shared.settings import Settings

# Parsed queries are remembered by their raw bytes; a plain query (netuid, a 48-character
# hotkey, trade) is well under this length, and a longer one is parsed each time.
MAX_REMEMBERED_QUERY: Final = 160
MAX_REMEMBERED: Final = 4096
MAX_NAMED: Final = 5  # unknown parameter names quoted in a 422; the rest are counted


class DividendsParams(BaseModel):
    """The query parameters, as validated and as documented."""

    model_config = ConfigDict(extra="forbid")

    netuid: int | None = Field(None, ge=0, le=65535, description="Subnet id; 0 is the root subnet.")
    hotkey: str | None = Field(
        None,
        description=f"Hotkey. {SS58_DESCRIPTION}",
        examples=[SS58_EXAMPLE],
        **SS58_CONSTRAINTS,
    )
    trade: bool | None = Field(
        None,
        description="Enqueue the sentiment-driven stake trade (needs the `trade` scope). "
        "Default: TRADE_BY_DEFAULT for trade-scoped tokens, false for the others.",
    )


_DECLARED: Final = tuple(DividendsParams.model_fields)


@dataclass(frozen=True, slots=True)
class DividendsQuery:
    """A valid query; `hotkey` is normalized to SS58 format 42. Shared between requests."""

    netuid: int | None
    hotkey: str | None
    trade: bool | None

    def trade_pair(self, settings: Settings) -> tuple[int, str]:
        """The pair a trade of this query is for: DEFAULT_NETUID / DEFAULT_HOTKEY fill what
        the query omits."""
        netuid = settings.default_netuid if self.netuid is None else self.netuid
        return netuid, self.hotkey or settings.default_hotkey


def parse_query(raw: bytes) -> DividendsQuery:
    """The query in a raw query string, or `RequestValidationError` (a malformed parameter)
    or `InvalidInput` (a hotkey that fails its SS58 checksum), both answered 422."""
    if len(raw) <= MAX_REMEMBERED_QUERY:
        return _remembered(raw)
    return _parse(raw)


@lru_cache(maxsize=MAX_REMEMBERED)
def _remembered(raw: bytes) -> DividendsQuery:
    return _parse(raw)  # a refusal raises, and so is never remembered


def _parse(raw: bytes) -> DividendsQuery:
    given = QueryParams(raw)
    values = {name: given[name] for name in given}
    try:
        params = DividendsParams.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors()
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        named = [e for e in errors if e["type"] != "extra_forbidden"] + unknown[:MAX_NAMED]
        refusals = [_refusal(error) for error in named]
        if len(unknown) > MAX_NAMED:  # a bounded answer to a query of a thousand names
            refusals.append(
                {
                    "type": "extra_forbidden",
                    "loc": ("query",),
                    "msg": f"{len(unknown) - MAX_NAMED} more unknown parameters",
                }
            )
        raise RequestValidationError(refusals) from None
    hotkey = None if params.hotkey is None else hotkey_param(params.hotkey)
    return DividendsQuery(params.netuid, hotkey, params.trade)


def _refusal(error: Any) -> dict[str, Any]:
    """A pydantic error as FastAPI words a query's; an undeclared name is named (cut short)."""
    if error["type"] == "extra_forbidden":
        name = printable(str(error["loc"][0]), limit=64)
        return {
            "type": "extra_forbidden",
            "loc": ("query", name),
            "msg": f"unknown parameter (this route takes {', '.join(_DECLARED)})",
        }
    return {**error, "loc": ("query", *error["loc"])}


def openapi_parameters() -> list[dict[str, Any]]:
    """`DividendsParams` as OpenAPI query parameters, written like FastAPI writes declared
    ones (the app's document then drops the `null` of each optional parameter)."""
    schema = DividendsParams.model_json_schema()
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = {key: value for key, value in field_schema.items() if key != "default"}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": field_schema["description"],
                "schema": field_schema,
            }
        )
    return parameters
