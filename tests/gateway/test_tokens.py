"""`python -m gateway tokens create | list | revoke` against the real database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

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


async def test_create_with_scopes_and_list_them(clean_db: str) -> None:
    created = _run(clean_db, "create", "bot", "--scopes", "trade,read")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    token = lines[-1]
    assert token.startswith("tsk_") and "read,trade" in lines[0]
    assert _run(clean_db, "create", "dash").returncode == 0
    conn = await asyncpg.connect(clean_db)
    try:
        rows = dict(await conn.fetch("SELECT name, scopes FROM api_tokens"))
    finally:
        await conn.close()
    assert rows == {"bot": "read,trade", "dash": "read"}
    listed = _run(clean_db, "list").stdout.splitlines()
    assert [line.split("\t")[:3:2] for line in listed] == [["bot", "read,trade"], ["dash", "read"]]


async def test_unknown_scope_or_reserved_name_is_refused_and_creates_nothing(
    clean_db: str,
) -> None:
    unknown = _run(clean_db, "create", "bot", "--scopes", "read,trdae")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "unknown scope 'trdae'" in unknown.stderr and "read, trade, admin" in unknown.stderr
    reserved = _run(clean_db, "create", "static:abc", "--scopes", "read")
    assert reserved.returncode == 1 and "may not contain ':'" in reserved.stderr
    conn = await asyncpg.connect(clean_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_tokens") == 0
    finally:
        await conn.close()


async def test_list_json_has_the_documented_keys_and_no_secret(clean_db: str) -> None:
    import orjson

    from gateway.tokens import JSON_KEYS

    assert orjson.loads(_run(clean_db, "list", "--json").stdout) == []
    bot = _run(clean_db, "create", "bot", "--scopes", "trade,read").stdout.splitlines()[-1]
    dash = _run(clean_db, "create", "dash").stdout.splitlines()[-1]
    assert _run(clean_db, "revoke", "dash").returncode == 0
    listed = _run(clean_db, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert bot not in listed.stdout and dash not in listed.stdout
    assert listed.stdout.count("\n") == 1  # one JSON document on one line
    rows = orjson.loads(listed.stdout)
    assert [list(row) for row in rows] == [list(JSON_KEYS)] * 2
    first, second = rows
    assert first["name"] == "bot" and first["scopes"] == ["read", "trade"]
    assert first["prefix"] == bot[:8] and first["active"] is True and first["revoked_at"] is None
    assert second["name"] == "dash" and second["scopes"] == ["read"]
    assert second["active"] is False and second["revoked_at"] >= second["created_at"]
    assert datetime.fromisoformat(first["created_at"]).tzinfo is not None
