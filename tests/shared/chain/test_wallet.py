"""`shared.chain.wallet`: loading errors and create / import / show round trips (no node).

Every wallet lives in a tmp dir. Encrypting or decrypting a btwallet coldkey costs
~3.5 s of CPU (its key derivation is deliberately slow), so the one encrypted
coldkey is made once per process (`encrypted_wallet`) and copied where needed.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.chain.wallet import (
    WalletProblem,
    create_wallet,
    import_wallet,
    load_wallet,
    show_wallet,
)
from shared.settings import Settings

PASSWORD = "Correct-Horse-7-battery"
WRONG_PASSWORD = "not-the-Password-42"
ENCRYPTED_NAME = "encrypted"


def wallet_settings(path: Path, name: str, **overrides: Any) -> Settings:
    """Settings for a wallet at path/name; no .env and no inherited secrets."""
    values: dict[str, Any] = {
        "wallet_path": str(path),
        "wallet_name": name,
        "wallet_hotkey": "default",
        "wallet_password": None,
        "wallet_mnemonic": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@functools.cache
def _encrypted_template() -> tuple[Path, dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="taostake-encrypted-wallet-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    info = create_wallet(wallet_settings(root, ENCRYPTED_NAME, wallet_password=SecretStr(PASSWORD)))
    return root / ENCRYPTED_NAME, info


def encrypted_wallet(path: Path, name: str = ENCRYPTED_NAME) -> dict[str, str]:
    """Copy the process's one password-encrypted wallet (made by `create_wallet`) to path/name;
    returns what `create_wallet` reported for it."""
    template, info = _encrypted_template()
    shutil.copytree(template, path / name)
    return info


def _mnemonic_shown(text: str, mnemonic: str) -> bool:
    words = mnemonic.split()
    return any(" ".join(words[i : i + 3]) in text for i in range(len(words) - 2))


# ====================================================================== load errors
def test_missing_coldkey_says_where_and_what_to_do(tmp_path: Path) -> None:
    settings = wallet_settings(tmp_path, "nowhere")

    with pytest.raises(WalletProblem) as caught:
        load_wallet(settings)

    message = str(caught.value)
    assert message.startswith(f"no coldkey at {tmp_path}/nowhere")
    assert "wallet create" in message and "wallet import" in message
    assert list(tmp_path.iterdir()) == []  # loading never creates anything


def test_encrypted_coldkey_without_password_is_a_wallet_problem(tmp_path: Path) -> None:
    encrypted_wallet(tmp_path)

    for password in (None, SecretStr("")):  # unset, or set but empty
        with pytest.raises(WalletProblem) as caught:
            load_wallet(wallet_settings(tmp_path, ENCRYPTED_NAME, wallet_password=password))
        assert str(caught.value) == (
            f"the coldkey at {tmp_path}/{ENCRYPTED_NAME} is encrypted and "
            "WALLET_PASSWORD is not set"
        )


def test_wrong_password_is_a_wallet_problem_that_never_shows_the_password(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    encrypted_wallet(tmp_path)
    settings = wallet_settings(tmp_path, ENCRYPTED_NAME, wallet_password=SecretStr(WRONG_PASSWORD))

    with pytest.raises(WalletProblem) as caught:
        load_wallet(settings)

    message = str(caught.value)
    assert message == f"cannot unlock the coldkey at {tmp_path}/{ENCRYPTED_NAME}: PasswordError"
    assert WRONG_PASSWORD not in message and WRONG_PASSWORD not in repr(caught.value)
    assert caught.value.__cause__ is not None
    assert WRONG_PASSWORD not in str(caught.value.__cause__)
    printed = capfd.readouterr()
    assert WRONG_PASSWORD not in printed.out + printed.err
    assert PASSWORD not in printed.out + printed.err


# ====================================================================== round trips
def test_create_show_load_round_trip_unencrypted(tmp_path: Path) -> None:
    settings = wallet_settings(tmp_path / "wallets", "fresh")

    created = create_wallet(settings)
    shown = show_wallet(settings)
    wallet = load_wallet(settings)

    assert created == shown
    assert shown["name"] == "fresh" and shown["path"] == str(tmp_path / "wallets")
    assert shown["coldkey_encrypted"] == "false"
    assert shown["coldkey"] == wallet.coldkey.ss58_address == wallet.coldkeypub.ss58_address
    assert shown["hotkey"] == wallet.hotkey.ss58_address != shown["coldkey"]
    assert shown["coldkey"].startswith("5") and len(shown["coldkey"]) == 48
    # The loaded coldkey signs, and the signature verifies against the shown address.
    signature = wallet.coldkey.sign(b"taostake")
    assert wallet.coldkeypub.verify(b"taostake", signature)
    # Files went into the tmp dir only, and nothing is overwritten on a second create.
    assert sorted(p.name for p in (tmp_path / "wallets" / "fresh").iterdir()) == [
        "coldkey",
        "coldkeypub.txt",
        "hotkeys",
    ]
    with pytest.raises(WalletProblem, match="already exists"):
        create_wallet(settings)
    assert show_wallet(settings)["coldkey"] == shown["coldkey"]


def test_create_with_password_writes_an_encrypted_coldkey(tmp_path: Path) -> None:
    created = encrypted_wallet(tmp_path)  # create_wallet with WALLET_PASSWORD set
    settings = wallet_settings(tmp_path, ENCRYPTED_NAME)

    shown = show_wallet(settings)  # reads the public half only: no password needed

    assert created["coldkey_encrypted"] == shown["coldkey_encrypted"] == "true"
    assert shown["coldkey"] == created["coldkey"] and shown["hotkey"] == created["hotkey"]
    raw = (tmp_path / ENCRYPTED_NAME / "coldkey").read_bytes()
    assert PASSWORD.encode() not in raw
    plain_fields = (b"secret" + b"Phrase", b"private" + b"Key")  # of the plain JSON keyfile
    assert not any(field in raw for field in plain_fields)


def test_import_regenerates_the_mnemonic_coldkey(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from bittensor_wallet import Keypair

    mnemonic = Keypair.generate_mnemonic(12)
    expected = Keypair.create_from_mnemonic(mnemonic).ss58_address
    settings = wallet_settings(tmp_path, "imported", wallet_mnemonic=SecretStr(mnemonic))

    imported = import_wallet(settings)
    wallet = load_wallet(settings)

    assert imported["coldkey"] == expected == wallet.coldkey.ss58_address
    assert imported["coldkey_encrypted"] == "false"
    assert imported["hotkey"] == wallet.hotkey.ss58_address
    assert show_wallet(settings) == imported
    with pytest.raises(WalletProblem, match="already exists"):
        import_wallet(settings)
    printed = capfd.readouterr()
    assert not _mnemonic_shown(printed.out + printed.err + str(imported), mnemonic)


def test_import_without_a_mnemonic_is_a_wallet_problem(tmp_path: Path) -> None:
    for mnemonic in (None, SecretStr("   ")):
        with pytest.raises(WalletProblem, match=r"^WALLET_MNEMONIC is not set$"):
            import_wallet(wallet_settings(tmp_path, "empty", wallet_mnemonic=mnemonic))
    assert list(tmp_path.iterdir()) == []


def test_a_bad_mnemonic_is_refused_without_echoing_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = "zebra orbit candle meadow velvet rocket plasma ocean tundra quartz ember walnut"
    settings = wallet_settings(tmp_path, "bad", wallet_mnemonic=SecretStr(bad))

    with pytest.raises(WalletProblem) as caught:
        import_wallet(settings)

    assert str(caught.value).startswith("WALLET_MNEMONIC was not accepted (")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    printed = capfd.readouterr()
    assert not _mnemonic_shown(str(caught.value) + printed.out + printed.err, bad)
    with pytest.raises(WalletProblem, match="no wallet at"):
        show_wallet(settings)


def test_show_without_a_wallet_is_a_wallet_problem(tmp_path: Path) -> None:
    with pytest.raises(WalletProblem) as caught:
        show_wallet(wallet_settings(tmp_path, "absent"))
    assert str(caught.value) == f"no wallet at {tmp_path}/absent"
