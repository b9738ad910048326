"""`make run`'s key: generated once into ./data (0600), reused, and a configured key wins."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

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
