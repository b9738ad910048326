"""`python -m gateway` as a command line: help, version, and `serve --host --port`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.__main__ import _parser, main
from tests.conftest import TEST_SIGNING_KEY, TOKENS, free_port
from tests.helptext import undocumented

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def test_every_command_and_option_has_help() -> None:
    assert undocumented(_parser()) == []
    tokens_list = _parser().parse_args(["tokens", "list", "--json"])
    assert tokens_list.json is True


def test_version_is_the_projects(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"taostake {_pyproject_version()}\n"


def test_tokens_list_help_documents_its_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.tokens import JSON_KEYS

    with pytest.raises(SystemExit):
        main(["tokens", "list", "--help"])
    out = capsys.readouterr().out
    for key in JSON_KEYS:
        assert f"\n  {key} " in out


class TestServe:
    def test_host_and_port_override_the_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import uvicorn

        calls: list[dict[str, Any]] = []
        monkeypatch.setenv("HOST", "127.0.0.1")
        monkeypatch.setenv("PORT", "8000")
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
        from shared.settings import get_settings

        get_settings.cache_clear()
        try:
            assert main(["serve", "--host", "0.0.0.0", "--port", "9123"]) == 0
            assert main(["serve"]) == 0
            assert main([]) == 0
        finally:
            get_settings.cache_clear()
        assert calls[0]["app"] == "gateway.app:serve_app" and calls[0]["factory"] is True
        assert (calls[0]["host"], calls[0]["port"]) == ("0.0.0.0", 9123)
        assert [(c["host"], c["port"]) for c in calls[1:]] == [("127.0.0.1", 8000)] * 2

    @pytest.mark.parametrize("port", ["-1", "65536", "http"])
    def test_a_bad_port_is_refused(self, port: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--port", port])
        assert exit_info.value.code == 2
        assert "--port" in capsys.readouterr().err

    def test_it_listens_on_the_given_port(
        self, redis_url: str, clean_db: str, tmp_path: Path
    ) -> None:
        port, unused = free_port(), free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.2",  # overridden by --host
            "PORT": str(unused),  # overridden by --port
            "REDIS_URL": redis_url,
            "DATABASE_URL": clean_db,
            "API_TOKENS": ",".join(TOKENS),
            "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
            "BITTENSOR_NETWORK": f"ws://127.0.0.1:{free_port()}",  # nothing listens: no chain
            "CHAIN_CONNECT_TIMEOUT_S": "0.5",
            "LOG_LEVEL": "WARNING",
        }
        log = tmp_path / "gateway.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"gateway did not start:\n{log.read_text()[-3000:]}")
                    time.sleep(0.1)
            assert health.status_code == 200
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{unused}/healthz", timeout=1)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
