"""`shared.chain.staking`'s storage reads on a stub substrate: answers no node gives on
purpose, so the simulated node cannot produce them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.chain.staking import _system_account
from shared.errors import ChainUnavailable

COLDKEY = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"


class _Substrate:
    """Answers System.Account with `value` (what `query_multi` decoded)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def create_storage_key(self, *args: Any, **kwargs: Any) -> str:
        return "key"

    async def query_multi(self, keys: list[str], block_hash: str) -> list[tuple[str, Any]]:
        return [(key, self.value) for key in keys]


async def test_no_system_account_value_is_unavailable_never_nonce_or_balance_0() -> None:
    """An absent account decodes as the storage default (a dict with nonce 0); None is no
    answer at all, and must not read as nonce 0 and a free balance of 0."""
    with pytest.raises(ChainUnavailable, match=r"System\.Account"):
        await _system_account(_Substrate(None), COLDKEY, "0x00")


async def test_a_system_account_value_is_returned_as_read() -> None:
    value = {"nonce": 4, "data": {"free": 7}}
    assert await _system_account(_Substrate(value), COLDKEY, "0x00") == value
