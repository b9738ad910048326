from __future__ import annotations

import pytest

from shared.ss58 import decode_ss58, encode_ss58, is_valid_ss58

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
ALICE_ID = bytes.fromhex("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")


def test_decodes_a_known_address() -> None:
    assert decode_ss58(ALICE) == ALICE_ID
    assert encode_ss58(ALICE_ID) == ALICE


@pytest.mark.parametrize(
    "bad",
    [ALICE[:-1] + "R", ALICE[:-2], ALICE + "1", "0" * 48, "", "5" * 48, ALICE.replace("G", "l")],
)
def test_rejects_bad_checksum_length_and_alphabet(bad: str) -> None:
    assert not is_valid_ss58(bad)
