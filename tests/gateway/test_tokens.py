"""`python -m gateway tokens create | list | revoke` against the real database."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg

from shared.security import hash_token


def _run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "API_TOKENS": ""}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "tokens", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_create_list_revoke(clean_db: str) -> None:
    created = _run(clean_db, "create", "dashboard")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("tsk_") and len(token) > 40
    conn = await asyncpg.connect(clean_db)
    try:
        row = await conn.fetchrow(
            "SELECT token_hash, prefix FROM api_tokens WHERE name=$1", "dashboard"
        )
    finally:
        await conn.close()
    assert row["token_hash"] == hash_token(token) and token not in row.values()
    duplicate = _run(clean_db, "create", "dashboard")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = _run(clean_db, "list")
    assert "dashboard" in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout
    assert _run(clean_db, "revoke", "dashboard").returncode == 0
    assert "revoked" in _run(clean_db, "list").stdout
    again = _run(clean_db, "revoke", "dashboard")
    assert again.returncode == 1 and "no active token" in again.stderr
