"""The console's JSON routes in the OpenAPI document: constraints and error answers."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.app import create_app
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(make_settings("redis://127.0.0.1:1/0", "sqlite://:memory:"))
    return app.openapi()


def params(document: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}


def test_parameters_carry_their_bounds(document: dict[str, Any]) -> None:
    positions = params(document, "/api/v1/positions")
    assert (positions["history"]["minimum"], positions["history"]["maximum"]) == (0, 100)
    assert (positions["limit"]["minimum"], positions["limit"]["maximum"]) == (1, 200)
    assert positions["cursor"]["pattern"] == "^[0-9]{1,10}$"
    assert positions["hotkey"]["format"] == "ss58" and positions["chain"]["type"] == "boolean"
    scores = params(document, "/api/v1/subnets/{netuid}/scores")
    assert (scores["netuid"]["minimum"], scores["netuid"]["maximum"]) == (0, 65535)
    assert (scores["limit"]["minimum"], scores["limit"]["maximum"]) == (1, 500)
    trades = params(document, "/api/v1/trades")
    assert trades["cursor"]["pattern"] == "^[0-9]{1,16}\\.[0-9A-Za-z_-]{1,32}$"
    assert trades["status"]["pattern"] == "^[a-z_]{1,24}$"


@pytest.mark.parametrize(
    "path", ["/api/v1/trades", "/api/v1/positions", "/api/v1/subnets/{netuid}/scores"]
)
def test_errors_are_documented_with_the_error_body(document: dict[str, Any], path: str) -> None:
    responses = document["paths"][path]["get"]["responses"]
    for status in ("401", "403", "414", "422", "429", "431", "503"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    assert "security" in document["paths"][path]["get"]


def test_the_console_page_is_not_an_api_operation(document: dict[str, Any]) -> None:
    assert not [path for path in document["paths"] if path.startswith("/console")]
