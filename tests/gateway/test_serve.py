"""`python -m gateway serve` as a real process: which proxy headers it believes, and how its
HTTP parser bounds a request head (the app's own limits only see what uvicorn buffered)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from gateway.__main__ import MAX_HEAD_BYTES, uvicorn_options
from gateway.limits import MAX_PATH_BYTES
from shared.settings import Settings
from tests.conftest import TEST_SIGNING_KEY, TOKENS, free_port, make_settings

ROOT = Path(__file__).resolve().parents[2]
DIVIDENDS = "/api/v1/tao_dividends"
FAILURES = 3


@contextlib.contextmanager
def gateway_process(redis_url: str, database_url: str, tmp_path: Path, **env: str) -> Iterator[str]:
    """The gateway served by `python -m gateway serve` on a free port; its base URL."""
    port = free_port()
    settings_env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "API_TOKENS": ",".join(TOKENS),
        "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
        "BITTENSOR_NETWORK": f"ws://127.0.0.1:{free_port()}",  # nothing listens: no chain
        "CHAIN_CONNECT_TIMEOUT_S": "0.5",  # start without waiting for it
        "AUTH_FAILURES_PER_MIN": str(FAILURES),
        "HTTP_PARSER": "httptools",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    # FORWARDED_ALLOW_IPS is left unset unless given: that is the default under test (uvicorn
    # reads the same variable for its own default).
    inherited = {k: v for k, v in os.environ.items() if k != "FORWARDED_ALLOW_IPS"}
    full_env = {**inherited, **settings_env, "PYTHONPATH": str(ROOT)}
    log = tmp_path / f"gateway-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=tmp_path,  # no .env here
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def guesses_with_rotating_forwarded_for(base: str, count: int) -> list[int]:
    codes = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for n in range(count):
            headers = {
                "Authorization": f"Bearer guess-{n:04d}-abcdefghijklmnop",
                "X-Forwarded-For": f"10.9.{n // 250}.{n % 250 + 1}",
            }
            codes.append(client.get(DIVIDENDS, headers=headers).status_code)
    return codes


def raw_request(base: str, head: bytes) -> bytes:
    """Send a request head on a raw socket; what comes back ("" if the server hung up)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(head)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def head_with_header_of(size: int) -> bytes:
    return (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
        + b"a" * size
        + b"\r\n\r\n"
    )


class TestProxyHeaders:
    def test_by_default_x_forwarded_for_is_ignored(
        self, redis_url: str, clean_db: str, redis: Redis, tmp_path: Path
    ) -> None:
        """Rotating X-Forwarded-For from 127.0.0.1 (trusted by uvicorn's own default) used to
        give every guess a fresh failed-auth budget."""
        with gateway_process(redis_url, clean_db, tmp_path) as base:
            codes = guesses_with_rotating_forwarded_for(base, FAILURES + 3)
        assert codes[:FAILURES] == [401] * FAILURES
        assert set(codes[FAILURES:]) == {429}

    def test_a_named_proxy_is_believed(
        self, redis_url: str, clean_db: str, redis: Redis, tmp_path: Path
    ) -> None:
        with gateway_process(redis_url, clean_db, tmp_path, FORWARDED_ALLOW_IPS="127.0.0.1") as b:
            codes = guesses_with_rotating_forwarded_for(b, FAILURES + 3)
        assert set(codes) == {401}  # each forwarded client has its own budget

    def test_options(self, redis_url: str) -> None:
        def options(**overrides: str) -> dict[str, object]:
            return uvicorn_options(make_settings(redis_url, "postgres://unused", **overrides))

        default = options()
        assert default["proxy_headers"] is False and "forwarded_allow_ips" not in default
        trusted = options(forwarded_allow_ips="10.0.0.2, 10.0.0.3")
        assert trusted["proxy_headers"] is True
        assert trusted["forwarded_allow_ips"] == "10.0.0.2, 10.0.0.3"
        assert options(http_parser="h11")["h11_max_incomplete_event_size"] == MAX_HEAD_BYTES
        assert Settings.model_fields["forwarded_allow_ips"].default == ""


class TestRequestHead:
    def test_h11_refuses_an_oversized_head_before_the_app(
        self, redis_url: str, clean_db: str, redis: Redis, tmp_path: Path
    ) -> None:
        with gateway_process(redis_url, clean_db, tmp_path, HTTP_PARSER="h11") as base:
            huge = raw_request(base, head_with_header_of(256 * 1024))
            # Within every app limit: the app answers (the bound leaves room for them).
            near = raw_request(base, head_with_header_of(12 * 1024))
            just_over = raw_request(base, head_with_header_of(17 * 1024))
        # uvicorn's own plain 400, never the app's JSON 431 (which would mean it was buffered
        # whole and handed over), or the connection simply closed.
        assert huge == b"" or huge.startswith(b"HTTP/1.1 400"), huge[:200]
        assert b"headers_too_large" not in huge
        assert near.startswith(b"HTTP/1.1 200")
        assert just_over.startswith(b"HTTP/1.1 431") and b"headers_too_large" in just_over

    def test_a_long_path_is_414_over_http(
        self, redis_url: str, clean_db: str, redis: Redis, tmp_path: Path
    ) -> None:
        with gateway_process(redis_url, clean_db, tmp_path) as base:
            response = httpx.get(f"{base}/{'p' * (MAX_PATH_BYTES + 1)}", timeout=10)
        assert response.status_code == 414
        assert response.json()["error"]["code"] == "uri_too_long"
