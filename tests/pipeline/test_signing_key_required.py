"""Every pipeline process that publishes or consumes refuses to start without
EVENT_SIGNING_KEY, saying how to set it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import schedule
from pipeline.runner import build_worker
from shared.settings import Settings
from shared.signing import SigningKeyMissing
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


def _keyless(redis_url: str) -> Settings:
    return make_settings(redis_url, "postgres://unused", event_signing_key=None)


async def test_worker_refuses_to_start(redis_url: str) -> None:
    with pytest.raises(SigningKeyMissing, match=r"EVENT_SIGNING_KEY is not set\..*generate one"):
        async with build_worker(_keyless(redis_url), ("tweets",), init_orm=False):
            pytest.fail("the worker started without a key")


def test_beat_refuses_to_start(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "settings", _keyless(redis_url))
    with pytest.raises(SystemExit, match="beat not started: EVENT_SIGNING_KEY is not set"):
        schedule.require_signing_key()


def test_cli_run_refuses_to_start(redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENT_SIGNING_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--stages", "tweets"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url},
        cwd=tmp_path,  # no .env here
        check=False,
    )
    assert result.returncode == 2
    assert "error: EVENT_SIGNING_KEY is not set" in result.stderr
    assert "make run" in result.stderr
