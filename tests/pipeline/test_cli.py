"""`python -m pipeline` subcommands as an operator runs them (subprocesses, real Redis/DB)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from pipeline.ops import deadletters, replay, streams
from shared.bus import publish
from shared.constants import STREAM_DEAD_LETTER
from shared.events import DividendRequested
from shared.settings import Settings
from shared.signing import sign
from tests.conftest import TEST_SIGNING_KEY
from tests.fakes.chain import ALICE
from tests.helptext import undocumented

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


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one JSON document, one line, nothing else
    return orjson.loads(result.stdout)


async def _dead_letter(redis: Redis) -> str:
    original = {"type": "tweets_fetched", "trade_id": "dl-trade", "netuid": "3", "n": "1"}
    entry_id = await redis.xadd(
        STREAM_DEAD_LETTER,
        sign(  # as the worker writes it: a signed DeadLetter
            {
                "type": "dead_letter",
                "version": "1",
                "event_id": "ev-1",
                "occurred_at": "2026-01-01T00:00:00+00:00",
                "trade_id": "dl-trade",
                "netuid": "3",
                "hotkey": ALICE,
                "source": "api",
                "stream": "stream:tweets_fetched",
                "group": "sentiment",
                "entry_id": "1-0",
                "deliveries": "5",
                "error": "ValueError: bad {score}\nnext",
                "original": orjson.dumps(original).decode(),
            }
        ),
    )
    return str(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)


class TestJsonOutput:
    async def test_streams(self, redis: Redis, redis_url: str) -> None:
        await publish(
            redis,
            DividendRequested(trade_id="json-trade", netuid=3, hotkey=ALICE, source="api"),
            maxlen=100,
        )
        await redis.xgroup_create("stream:dividend_requested", "tweets", id="0")
        await redis.xreadgroup("tweets", "c1", {"stream:dividend_requested": ">"})  # pending
        await _dead_letter(redis)
        report = _json(_run({"REDIS_URL": redis_url}, "streams", "--json"))
        assert list(report) == ["streams", "dead_letters"] and report["dead_letters"] == 1
        assert all(list(row) == list(streams.JSON_KEYS) for row in report["streams"])
        by_stream = {row["stream"]: row for row in report["streams"]}
        requested = by_stream["stream:dividend_requested"]
        assert requested["length"] == 1 and requested["last_id"] != "-"
        assert requested["group"] == "tweets" and requested["consumers"] == 1
        assert requested["pending"] == 1 and requested["lag"] == 0
        assert isinstance(requested["oldest_pending_idle_s"], float)
        assert by_stream["stream:dead_letter"]["length"] == 1

    async def test_streams_watch_prints_one_json_line_per_refresh(self, redis_url: str) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "streams", "--json", "--watch", "0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url},
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
        finally:
            proc.terminate()
            proc.wait(10)
        reports = [orjson.loads(line) for line in lines]
        assert all(list(r) == ["streams", "dead_letters"] for r in reports)
        assert "\x1b" not in "".join(lines)  # no screen clearing in JSON mode

    async def test_replay_dry_run(self, redis: Redis, redis_url: str, clean_db: str) -> None:
        env = {"REDIS_URL": redis_url, "DATABASE_URL": clean_db}
        await publish(
            redis,
            DividendRequested(trade_id="json-trade", netuid=3, hotkey=ALICE, source="api"),
            maxlen=100,
        )
        plan = _json(_run(env, "replay", "--trade", "json-trade", "--dry-run", "--json"))
        assert plan["dry_run"] is True and plan["published"] == []
        [entry] = plan["entries"]
        assert list(entry) == list(replay.JSON_KEYS)
        assert (
            entry["stream"] == "stream:dividend_requested" and entry["type"] == "dividend_requested"
        )
        assert entry["trade_id"] == entry["replay_of"] == "json-trade"
        assert entry["fields"]["source"] == "replay" and entry["fields"]["netuid"] == "3"
        assert await redis.xlen("stream:dividend_requested") == 1  # nothing published
        new = _json(
            _run(env, "replay", "--trade", "json-trade", "--dry-run", "--as-new-trade", "--json")
        )
        [fresh] = new["entries"]
        assert fresh["replay_of"] == "json-trade" and fresh["trade_id"] != "json-trade"

    async def test_dead_letter_list_and_show(self, redis: Redis, redis_url: str) -> None:
        env = {"REDIS_URL": redis_url}
        assert _json(_run(env, "dead-letter", "list", "--json")) == {
            "letters": [],
            "shown": 0,
            "total": 0,
        }
        letter_id = await _dead_letter(redis)
        listed = _json(_run(env, "dead-letter", "list", "--json"))
        assert listed["shown"] == listed["total"] == 1
        [letter] = listed["letters"]
        assert list(letter) == [k for k in deadletters.JSON_KEYS if k != "original"]
        assert letter["id"] == letter_id and letter["entry_id"] == "1-0"
        assert letter["stream"] == "stream:tweets_fetched" and letter["group"] == "sentiment"
        assert letter["trade_id"] == "dl-trade" and letter["netuid"] == 3
        assert letter["deliveries"] == 5 and letter["error"] == "ValueError: bad {score}\nnext"
        assert letter["invalid"] is None and letter["occurred_at"] == "2026-01-01T00:00:00.000Z"
        shown = _json(_run(env, "dead-letter", "show", letter_id, "--json"))
        assert list(shown) == list(deadletters.JSON_KEYS)
        assert {k: v for k, v in shown.items() if k != "original"} == letter
        assert shown["original"] == {
            "type": "tweets_fetched",
            "trade_id": "dl-trade",
            "netuid": "3",
            "n": "1",
        }
        missing = _run(env, "dead-letter", "show", "9-9", "--json")
        assert missing.returncode == 1 and missing.stdout == ""
        assert "no dead letter 9-9" in missing.stderr


class TestHelpAndVersion:
    def test_every_command_and_option_has_help(self) -> None:
        from pipeline.__main__ import _parser

        assert undocumented(_parser()) == []

    @pytest.mark.parametrize(
        ("command", "keys"),
        [
            (["streams"], streams.JSON_KEYS),
            (["replay"], replay.JSON_KEYS),
            (["dead-letter", "list"], deadletters.JSON_KEYS),
            (["dead-letter", "show"], deadletters.JSON_KEYS),
        ],
    )
    def test_json_keys_are_documented_in_help(
        self, command: list[str], keys: dict[str, str]
    ) -> None:
        result = _run({}, *command, "--help")
        assert result.returncode == 0
        assert "--json" in result.stdout
        for key, meaning in keys.items():
            assert f"  {key.ljust(max(map(len, keys)))}  {meaning}\n" in result.stdout

    def test_version(self) -> None:
        import tomllib

        with (ROOT / "pyproject.toml").open("rb") as file:
            version = tomllib.load(file)["project"]["version"]
        result = _run({}, "--version")
        assert result.returncode == 0 and result.stdout == f"taostake {version}\n"


async def test_run_freezes_the_heap_once_the_worker_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.__main__ as cli

    steps: list[str] = []

    class Built:
        consumer = "c"

        def install_signal_handlers(self) -> None:
            steps.append("signals")

        async def run(self) -> None:
            steps.append("run")

    @contextlib.asynccontextmanager
    async def build(settings: Any, stages: list[str]) -> AsyncIterator[Built]:
        steps.append("built")
        yield Built()
        steps.append("closed")

    def freeze() -> int:
        steps.append("frozen")
        return 1

    monkeypatch.setattr(cli, "build_worker", build)
    monkeypatch.setattr(cli, "freeze_startup_heap", freeze)
    assert await cli._run(Settings(_env_file=None), ["tweets"]) == 0
    assert steps == ["built", "signals", "frozen", "run", "closed"]
