"""`python -m pipeline` subcommands as an operator runs them (subprocesses, real Redis/DB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from shared.bus import publish
from shared.events import DividendRequested
from tests.conftest import TEST_SIGNING_KEY
from tests.fakes.chain import ALICE

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "EVENT_SIGNING_KEY": TEST_SIGNING_KEY, **env},
        check=False,
        cwd=ROOT,
    )


async def test_streams_replay_and_dead_letter_commands(
    redis: Redis, redis_url: str, clean_db: str
) -> None:
    env = {"REDIS_URL": redis_url, "DATABASE_URL": clean_db}
    await publish(
        redis,
        DividendRequested(trade_id="cli-trade", netuid=3, hotkey=ALICE, source="api"),
        maxlen=100,
    )
    streams = _run(env, "streams")
    assert streams.returncode == 0 and "stream:dividend_requested  1" in streams.stdout
    dry = _run(env, "replay", "--trade", "cli-trade", "--dry-run")
    assert dry.returncode == 0 and "would publish stream:dividend_requested" in dry.stdout
    assert await redis.xlen("stream:dividend_requested") == 1
    missing = _run(env, "replay", "--trade", "nope")
    assert missing.returncode == 1 and "no trade nope" in missing.stderr
    letters = _run(env, "dead-letter", "list")
    assert letters.returncode == 0 and "0 shown, 0 in total" in letters.stdout
    bad = _run(env, "dead-letter", "purge", "--older-than", "soon")
    assert bad.returncode == 1 and "bad duration" in bad.stderr


def test_wallet_create_show_import_never_print_secrets(tmp_path: Path) -> None:
    from bittensor_wallet import Keypair

    env = {
        "WALLET_PATH": str(tmp_path),
        "WALLET_NAME": "ops",
        "WALLET_HOTKEY": "hk",
        "WALLET_PASSWORD": "",
        "WALLET_MNEMONIC": "",
    }
    missing = _run(env, "wallet", "show")
    assert missing.returncode == 1 and "no wallet" in missing.stderr
    created = _run(env, "wallet", "create")
    assert created.returncode == 0, created.stderr
    assert "coldkey: 5" in created.stdout and "hotkey: 5" in created.stdout
    again = _run(env, "wallet", "create")
    assert again.returncode == 1 and "already exists" in again.stderr

    mnemonic = Keypair.generate_mnemonic(12)
    expected = Keypair.create_from_mnemonic(mnemonic).ss58_address
    imported = _run(
        {
            **env,
            "WALLET_NAME": "imported",
            "WALLET_MNEMONIC": mnemonic,
            "WALLET_PASSWORD": "a-Strong-passw0rd",
        },
        "wallet",
        "import",
    )
    assert imported.returncode == 0, imported.stderr
    assert f"coldkey: {expected}" in imported.stdout
    assert "coldkey_encrypted: true" in imported.stdout
    words = mnemonic.split()
    shown = imported.stdout + imported.stderr
    for i in range(len(words) - 2):  # not the phrase, nor any three words of it in a row
        assert " ".join(words[i : i + 3]) not in shown
    assert "a-Strong-passw0rd" not in imported.stdout + imported.stderr
