"""`make run`'s key: generated once into ./data (0600), reused, and a configured key wins."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from scripts.signing_key import ensure_signing_key
from shared.settings import Settings
from shared.signing import configure_signing

ROOT = Path(__file__).resolve().parents[2]


def test_created_once_with_mode_0600_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "event_signing_key"
    key, origin = ensure_signing_key(Settings(_env_file=None), path)  # type: ignore[call-arg]
    assert origin == "created" and len(key) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, origin = ensure_signing_key(Settings(_env_file=None), path)  # type: ignore[call-arg]
    assert (again, origin) == (key, "reused")
    configure_signing(Settings(_env_file=None, event_signing_key=SecretStr(key)))  # type: ignore[call-arg]


def test_a_configured_key_wins_and_no_file_is_made(tmp_path: Path) -> None:
    path = tmp_path / "event_signing_key"
    settings = Settings(_env_file=None, event_signing_key=SecretStr("configured-key-0123456789"))  # type: ignore[call-arg]
    assert ensure_signing_key(settings, path) == ("configured-key-0123456789", "configured")
    assert not path.exists()


def test_script_prints_the_configured_key_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENT_SIGNING_KEY"}
    env.update(PYTHONPATH=str(ROOT), EVENT_SIGNING_KEY="from-the-environment-0123")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "signing_key.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert result.stdout == "from-the-environment-0123" and result.stderr == ""


def _settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_data_dir_it_creates_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "event_signing_key"
    old_umask = os.umask(0o022)
    try:
        ensure_signing_key(_settings(), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_data_dir_is_left_as_it_is(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # noqa: S103 (a shared ./data a user made: left alone)
    ensure_signing_key(_settings(), data / "event_signing_key")
    assert stat.S_IMODE(data.stat().st_mode) == 0o755


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620], ids=oct)
def test_a_key_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "event_signing_key"
    key, _ = ensure_signing_key(_settings(), path)
    os.chmod(path, mode)
    with pytest.raises(SystemExit) as refused:
        ensure_signing_key(_settings(), path)
    message = str(refused.value.code)
    assert f"mode {mode:04o}" in message and "chmod 600" in message
    assert key not in message


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "event_signing_key"
    ensure_signing_key(_settings(), path)
    os.chown(path, 4321, -1)
    with pytest.raises(SystemExit, match="owned by uid 4321, not by you"):
        ensure_signing_key(_settings(), path)


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.write_text("k" * 64 + "\n")
    os.chmod(real, 0o600)
    link = tmp_path / "event_signing_key"
    link.symlink_to(real)
    with pytest.raises(SystemExit, match="cannot be read as a key file"):
        ensure_signing_key(_settings(), link)
