"""The staking wallet (btwallet): load, create, import, show. No secret is ever printed.

The coldkey may be encrypted: WALLET_PASSWORD unlocks it without a prompt. The
keypair is decrypted once per process (seconds of CPU), off the event loop, and
cached by btwallet for every later signature.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared.settings import Settings


class WalletProblem(Exception):
    """The wallet cannot be used, and what to do about it."""


def _wallet(settings: Settings) -> Any:
    from bittensor_wallet import Wallet

    path = str(Path(os.path.expanduser(settings.wallet_path)))
    return Wallet(name=settings.wallet_name, hotkey=settings.wallet_hotkey, path=path)


def _where(settings: Settings) -> str:
    return f"{os.path.expanduser(settings.wallet_path)}/{settings.wallet_name}"


def _password(settings: Settings) -> str | None:
    secret = settings.wallet_password
    return secret.get_secret_value() if secret is not None and secret.get_secret_value() else None


def load_wallet(settings: Settings) -> Any:
    """A wallet whose coldkey can sign without a prompt (blocking: call in a thread)."""
    wallet = _wallet(settings)
    if not wallet.coldkey_file.exists_on_device():
        raise WalletProblem(
            f"no coldkey at {_where(settings)} (set WALLET_PATH/WALLET_NAME, or run "
            "`python -m pipeline wallet create` or `wallet import`)"
        )
    if wallet.coldkey_file.is_encrypted():
        password = _password(settings)
        if password is None:
            raise WalletProblem(
                f"the coldkey at {_where(settings)} is encrypted and WALLET_PASSWORD is not set"
            )
        wallet.coldkey_file.save_password_to_env(password)  # read by btwallet, this process only
    try:
        wallet.unlock_coldkey()
    except Exception as exc:  # btwallet raises its own PasswordError / KeyFileError
        raise WalletProblem(
            f"cannot unlock the coldkey at {_where(settings)}: {type(exc).__name__}"
        ) from exc
    return wallet


def show_wallet(settings: Settings) -> dict[str, str]:
    wallet = _wallet(settings)
    if not wallet.coldkeypub_file.exists_on_device():
        raise WalletProblem(f"no wallet at {_where(settings)}")
    info = {
        "name": settings.wallet_name,
        "path": os.path.expanduser(settings.wallet_path),
        "coldkey": wallet.coldkeypub.ss58_address,
        "coldkey_encrypted": str(wallet.coldkey_file.is_encrypted()).lower()
        if wallet.coldkey_file.exists_on_device()
        else "missing",
    }
    if wallet.hotkey_file.exists_on_device():
        info["hotkey"] = wallet.hotkey.ss58_address
    return info


def create_wallet(settings: Settings) -> dict[str, str]:
    """A new coldkey (encrypted with WALLET_PASSWORD when set) and hotkey; fails if one exists."""
    wallet = _wallet(settings)
    if wallet.coldkey_file.exists_on_device():
        raise WalletProblem(f"a wallet already exists at {_where(settings)}; not overwriting it")
    password = _password(settings)
    wallet.create_new_coldkey(
        n_words=12,
        use_password=password is not None,
        overwrite=False,
        suppress=True,
        coldkey_password=password,
    )
    if not wallet.hotkey_file.exists_on_device():
        wallet.create_new_hotkey(n_words=12, use_password=False, overwrite=False, suppress=True)
    return show_wallet(settings)


def import_wallet(settings: Settings) -> dict[str, str]:
    """The coldkey regenerated from WALLET_MNEMONIC; fails if a coldkey exists."""
    mnemonic = settings.wallet_mnemonic.get_secret_value() if settings.wallet_mnemonic else ""
    if not mnemonic.strip():
        raise WalletProblem("WALLET_MNEMONIC is not set")
    wallet = _wallet(settings)
    if wallet.coldkey_file.exists_on_device():
        raise WalletProblem(f"a wallet already exists at {_where(settings)}; not overwriting it")
    password = _password(settings)
    try:
        wallet.regenerate_coldkey(
            mnemonic=mnemonic.strip(),
            use_password=password is not None,
            overwrite=False,
            suppress=True,
            coldkey_password=password,
        )
    except Exception as exc:  # never echo the mnemonic, which an error message could carry
        raise WalletProblem(f"WALLET_MNEMONIC was not accepted ({type(exc).__name__})") from None
    if not wallet.hotkey_file.exists_on_device():
        wallet.create_new_hotkey(n_words=12, use_password=False, overwrite=False, suppress=True)
    return show_wallet(settings)
