"""The one parser of the dividends query: FastAPI's reading of a query string, our refusals."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from gateway.dividends.query import MAX_REMEMBERED_QUERY, DividendsQuery, parse_query
from shared.errors import InvalidInput
from shared.ss58 import decode_ss58, encode_ss58
from tests.conftest import make_settings
from tests.fakes.chain import ALICE, DEFAULT_HOTKEY

POLKADOT_ALICE = encode_ss58(decode_ss58(ALICE), 0)  # the same account, network prefix 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", (None, None, None)),
        (b"netuid=0", (0, None, None)),
        (b"netuid=65535&trade=TRUE", (65535, None, True)),
        (f"hotkey={ALICE}".encode(), (None, ALICE, None)),
        (f"hotkey={POLKADOT_ALICE}".encode(), (None, ALICE, None)),  # normalized to format 42
        # Read as FastAPI reads a query: the last repeat wins, percent-escapes are decoded,
        # and pydantic's lax integers and booleans apply.
        (b"netuid=1&netuid=2", (2, None, None)),
        (b"netuid=abc&netuid=3", (3, None, None)),
        (b"netuid=%2B3", (3, None, None)),
        (b"netuid=%33", (3, None, None)),
        (b"netuid=3.0", (3, None, None)),
        (b"trade=off", (None, None, False)),
        (b"trade=1", (None, None, True)),
    ],
)
def test_valid_queries(raw: bytes, expected: tuple[int | None, str | None, bool | None]) -> None:
    query = parse_query(raw)
    assert (query.netuid, query.hotkey, query.trade) == expected


@pytest.mark.parametrize(
    ("raw", "location", "message"),
    [
        (b"netuid=65536", "netuid", "Input should be less than or equal to 65535"),
        (b"netuid=-1", "netuid", "Input should be greater than or equal to 0"),
        (b"netuid", "netuid", "Input should be a valid integer, unable to parse string"),
        (b"netuid=3&netuid=x", "netuid", "Input should be a valid integer, unable to parse"),
        (b"trade=yes%20", "trade", "Input should be a valid boolean"),
        (b"hotkey=5abc", "hotkey", "String should have at least 46 characters"),
    ],
)
def test_malformed_parameters_are_refused_like_fastapi_refuses_them(
    raw: bytes, location: str, message: str
) -> None:
    with pytest.raises(RequestValidationError) as info:
        parse_query(raw)
    [error] = info.value.errors()
    assert error["loc"] == ("query", location)
    assert error["msg"].startswith(message)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"other=1&netuid=3", "other"),
        (b"netuid=3&Trade=false", "Trade"),  # a misspelled opt-out is not an omitted trade
        (b"trades=0", "trades"),
        (b"trade%20=false", "trade "),
        (b"%0A=1", "\\n"),  # a name is escaped and cut short: it is echoed in the 422
        (b"x" * 100 + b"=1", "x" * 64 + "…"),
    ],
)
def test_a_name_the_route_does_not_declare_is_refused(raw: bytes, name: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        parse_query(raw)
    [error] = info.value.errors()
    assert error["loc"] == ("query", name)
    assert error["msg"] == "unknown parameter (this route takes netuid, hotkey, trade)"


def test_a_query_of_many_unknown_names_gets_a_bounded_refusal() -> None:
    raw = b"netuid=x&" + b"&".join(b"p%d=1" % n for n in range(600))
    with pytest.raises(RequestValidationError) as info:
        parse_query(raw)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [
        ("query", "netuid"),
        *(("query", f"p{n}") for n in range(5)),
        ("query",),
    ]
    assert errors[-1]["msg"] == "595 more unknown parameters"


def test_every_malformed_parameter_is_named() -> None:
    with pytest.raises(RequestValidationError) as info:
        parse_query(b"netuid=70000&trade=maybe")
    assert [error["loc"] for error in info.value.errors()] == [
        ("query", "netuid"),
        ("query", "trade"),
    ]


def test_a_bad_checksum_is_refused_after_the_other_parameters() -> None:
    bad = ALICE[:-1] + ("X" if ALICE[-1] != "X" else "Y")
    with pytest.raises(InvalidInput, match=r"^hotkey: not a valid SS58 address"):
        parse_query(f"hotkey={bad}".encode())
    with pytest.raises(RequestValidationError):  # a malformed netuid is named first, alone
        parse_query(f"netuid=x&hotkey={bad}".encode())


def test_plain_queries_are_remembered_long_ones_are_not() -> None:
    raw = f"netuid=3&hotkey={ALICE}&trade=false".encode()
    assert parse_query(raw) is parse_query(raw)
    long = b"netuid=1&" * (MAX_REMEMBERED_QUERY // 9) + raw  # the last repeat wins
    assert parse_query(long) == parse_query(raw)
    assert parse_query(long) is not parse_query(long)


def test_trade_pair_fills_what_the_query_omits() -> None:
    settings = make_settings("redis://unused", "postgres://unused", default_netuid=18)
    assert DividendsQuery(None, None, None).trade_pair(settings) == (18, DEFAULT_HOTKEY)
    assert DividendsQuery(0, None, True).trade_pair(settings) == (0, DEFAULT_HOTKEY)
    assert DividendsQuery(3, ALICE, True).trade_pair(settings) == (3, ALICE)
