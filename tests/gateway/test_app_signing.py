"""The gateway enqueues trades as signed events: without EVENT_SIGNING_KEY it does not start."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from shared.signing import SigningKeyMissing
from tests.conftest import make_settings
from tests.fakes.chain import FakeChain


def test_gateway_refuses_to_start_without_a_key(redis_url: str) -> None:
    settings = make_settings(redis_url, "postgres://unused", event_signing_key=None)
    with pytest.raises(SigningKeyMissing, match="EVENT_SIGNING_KEY is not set"):
        create_app(settings, chain=FakeChain())
