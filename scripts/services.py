"""Make sure Redis (and for tests PostgreSQL) is reachable; start a local one if we can.

Used by `make run` and `make test`. Order: the URL from the environment; else a
local server started here (redis-server / pg_ctlcluster) if installed; else
(tests only) testcontainers takes over in tests/conftest.py when a Docker
engine exists; else say exactly what to install.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

import asyncpg
import redis

LOCAL = {"127.0.0.1", "localhost", "::1"}
DEFAULT_TEST_REDIS = "redis://127.0.0.1:6379/15"
DEFAULT_TEST_DB = "postgres://postgres@127.0.0.1:5432/test"


def redis_ok(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_redis(url: str) -> bool:
    if redis_ok(url):
        return True
    parts = urlsplit(url)
    server = shutil.which("redis-server")
    if parts.hostname in LOCAL and server:
        port = str(parts.port or 6379)
        print(f"starting a local redis-server on 127.0.0.1:{port}")
        subprocess.run(
            [
                server,
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                port,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=False,
        )
        for _ in range(50):
            if redis_ok(url):
                return True
            time.sleep(0.1)
    print(
        f"Redis is not reachable at {parts.hostname}:{parts.port or 6379}. Set REDIS_URL to a "
        "running server, or install one: `apt-get install redis-server` (Debian/Ubuntu), "
        "`brew install redis` (macOS).",
        file=sys.stderr,
    )
    return False


async def postgres_ok(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _create_database(url: str) -> bool:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    try:
        conn = await asyncpg.connect(admin, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name):
            print(f"creating database {name}")
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return True


def ensure_postgres(url: str) -> bool:
    if asyncio.run(postgres_ok(url)):
        return True
    if asyncio.run(_create_database(url)) and asyncio.run(postgres_ok(url)):
        return True
    parts = urlsplit(url)
    versions = sorted(glob.glob("/etc/postgresql/*"))
    if parts.hostname in LOCAL and shutil.which("pg_ctlcluster") and versions:
        version = os.path.basename(versions[-1])
        print(f"starting the local PostgreSQL {version} cluster")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
        )
        for _ in range(50):
            if asyncio.run(_create_database(url)) and asyncio.run(postgres_ok(url)):
                return True
            time.sleep(0.2)
    if docker_ok():
        print("PostgreSQL not reachable; the tests will start one with testcontainers")
        return True
    print(
        f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432}. Set "
        "TEST_DATABASE_URL, or install it: `apt-get install postgresql` (Debian/Ubuntu).",
        file=sys.stderr,
    )
    return False


def docker_ok() -> bool:
    try:
        import docker

        return bool(docker.from_env().ping())
    except Exception:  # any failure means: no usable engine
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("services", nargs="+", choices=["redis", "postgres"])
    parser.add_argument("--test", action="store_true", help="use the TEST_* URLs")
    args = parser.parse_args()
    ok = True
    if "redis" in args.services:
        url = os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS) if args.test else None
        url = url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        ok &= ensure_redis(url) or (args.test and docker_ok())
    if "postgres" in args.services:
        ok &= ensure_postgres(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DB))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
