"""Text-format tracebacks: an exception message (user data: a tweet, a reply, a path) can never
forge a log record of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from loguru import logger
from pydantic import SecretStr

from shared.logging import configure_logging
from shared.settings import Settings
from tests.conftest import run_python

FORGED = "2026-01-01T00:00:00.000Z INFO    gateway.app FORGED: trade approved"


@pytest.fixture
def text_log() -> Iterator[list[str]]:
    lines: list[str] = []
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, log_format="text", event_signing_key=SecretStr("k" * 32)
    )
    configure_logging(settings, sink=lines.append)
    yield lines
    logger.remove()


def test_a_newline_in_an_exception_message_cannot_start_a_line(text_log: list[str]) -> None:
    try:
        raise ValueError(f"bad tweet\n{FORGED}\r{FORGED}\x1b[2K\u2028{FORGED}")
    except ValueError as exc:
        logger.opt(exception=exc).error("entry failed")
    logger.info("next record")
    text = "".join(text_log)
    lines = text.splitlines(keepends=False)
    records = [line for line in lines if line[:1].isdigit()]
    assert len(records) == 2  # the error and "next record", nothing forged
    assert " ERROR " in records[0] and records[0].rstrip().endswith("entry failed")
    continuation = lines[1 : lines.index(records[1])]
    assert continuation[0].lstrip(" |").startswith("Traceback")
    assert all(line.startswith("  | ") for line in continuation)  # never at column 0
    assert any(line == f"  | {FORGED}\\r{FORGED}\\x1b[2K\\u2028{FORGED}" for line in continuation)
    assert "\x1b" not in text and "\r" not in text and "\u2028" not in text


def test_braces_in_an_exception_are_kept_as_they_are(text_log: list[str]) -> None:
    try:
        {"a": 1}["{key} <red>"]
    except KeyError as exc:
        logger.opt(exception=exc).error("lookup failed")
    text = "".join(text_log)
    assert "  | KeyError: '{key} <red>'" in text


@pytest.fixture
def json_log() -> Iterator[list[str]]:
    lines: list[str] = []
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, log_format="json", event_signing_key=SecretStr("k" * 32)
    )
    configure_logging(settings, sink=lambda message: lines.append(str(message)))
    yield lines
    logger.remove()


def _load_failure() -> None:
    try:
        {"a": 1}["b"]
    except KeyError as exc:
        raise ConnectionError("chain down\nBearer abc.def \x1b[2K {key}\u2028\x85.") from exc


class TestJsonExceptions:
    def test_the_traceback_is_kept_as_frames_with_its_cause(self, json_log: list[str]) -> None:
        import orjson

        try:
            _load_failure()
        except ConnectionError as exc:
            logger.opt(exception=exc).error("entry failed")
        [line] = json_log
        assert len(line.splitlines()) == 1 and line.endswith("\n")  # one record, one line
        record = orjson.loads(line)
        assert record["msg"] == "entry failed" and record["level"] == "ERROR"
        fields = record["exception"]
        assert fields["type"] == "ConnectionError"
        # masked, and the control characters travel JSON-escaped (one line), not dropped
        assert fields["message"] == "chain down\nBearer *** \x1b[2K {key}\u2028\x85."
        frames = fields["traceback"]
        assert [f["function"] for f in frames] == [
            "test_the_traceback_is_kept_as_frames_with_its_cause",
            "_load_failure",
        ]
        assert frames[-1]["file"] == __file__ and isinstance(frames[-1]["line"], int)
        assert "ConnectionError" in frames[-1]["code"]
        cause = fields["cause"]
        assert cause["type"] == "KeyError" and cause["message"] == "'b'"
        assert cause["traceback"][0]["function"] == "_load_failure"
        assert "cause" not in cause

    def test_module_qualified_types_and_configured_secrets_are_masked(
        self, json_log: list[str]
    ) -> None:
        import orjson
        from redis.exceptions import ResponseError

        from shared.logging import register_secrets

        register_secrets(["cpk_json_secret_987654"])
        try:
            raise ResponseError("bad key cpk_json_secret_987654")
        except ResponseError as exc:
            logger.opt(exception=exc).warning("redis said no")
        exc_fields = orjson.loads(json_log[-1])["exception"]
        assert exc_fields["type"] == "redis.exceptions.ResponseError"
        assert exc_fields["message"] == "bad key ***"
        assert "cpk_json_secret_987654" not in json_log[-1]

    def test_a_record_without_exception_has_no_exception_key(self, json_log: list[str]) -> None:
        import orjson

        logger.info("plain")
        assert "exception" not in orjson.loads(json_log[-1])


# A fresh process: it configures logging the way gateway and pipeline do, imports the SDK
# (before or after, as given), then the SDK logs a chain error through its own logger.
_SDK_SCRIPT = """
import logging, sys, time
from pydantic import SecretStr
from shared.settings import Settings
from shared.logging import configure_logging

def configure():
    configure_logging(Settings(_env_file=None, log_format="text", log_level="INFO",
                               event_signing_key=SecretStr("k" * 32)))

def sdk():
    from shared.chain.subtensor import _import_sdk
    _import_sdk()

first, then = (configure, sdk) if sys.argv[1] == "configure-first" else (sdk, configure)
first()
then()
from bittensor.utils.btlogging import logging as btlogging
btlogging.error(":cross_mark: [red]Failed to get payment info: [/red]chain-error-42")
try:
    raise RuntimeError("boom-43")
except RuntimeError:
    btlogging.exception("[red]submit failed[/red]")
logging.getLogger("uvicorn.error").warning("uvicorn-after-sdk-44")
logging.getLogger("async_substrate_interface").warning("substrate-after-sdk-45")
time.sleep(0.2)  # the SDK's listener thread would print its copy by now (and at exit)
"""


@pytest.mark.parametrize("order", ["configure-first", "sdk-first"])
def test_an_sdk_error_is_logged_once_without_ansi(order: str) -> None:
    proc = run_python(_SDK_SCRIPT, order, timeout=120)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "\x1b" not in output and "\\x1b" not in output  # no colours, raw or escaped
    assert output.count("chain-error-42") == 1
    [line] = [row for row in output.splitlines() if "chain-error-42" in row]
    assert " ERROR   bittensor Failed to get payment info: chain-error-42" in line
    assert "[red]" not in output and ":cross_mark:" not in output
    assert output.count("submit failed") == 1 and output.count("boom-43") == 1
    assert "  | RuntimeError: boom-43" in output  # its traceback, once, in our format
    # what importing the SDK strips from other loggers is given back
    assert output.count("uvicorn-after-sdk-44") == 1
    assert output.count("substrate-after-sdk-45") == 1


# --- the access line and the buffered sink ----------------------------------------------------

_RID = "584395d8385347899a87be5fcf328a20"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"log_format": "text", "log_level": "INFO", **overrides}
    return Settings(_env_file=None, event_signing_key=SecretStr("k" * 32), **values)  # type: ignore[call-arg]


def _epoch_ns(stamp: datetime) -> int:
    return int(stamp.replace(microsecond=0).timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
@pytest.mark.parametrize(
    ("method", "path", "status", "elapsed_ms", "request_id", "whole_second"),
    [
        ("GET", "/api/v1/tao_dividends", 200, 0.123, _RID, False),
        ("POST", '/x\n{foo} {} <red>\x1b[31m\x85\u2028é"\\…', 404, 12.35, "req-1", False),
        ("GE\x01T", "/a b", 500, 1234.56, "abc.DEF:1-2_3", True),
        ("GET", "/p", 401, 0.05, "has-cpk_rid_secret_9876-in-it", False),  # masked, as extras are
    ],
)
def test_the_access_line_is_the_line_loguru_writes(
    monkeypatch: pytest.MonkeyPatch,
    log_format: str,
    zone: str,
    method: str,
    path: str,
    status: int,
    elapsed_ms: float,
    request_id: str,
    whole_second: bool,
) -> None:
    """`access_line` against loguru's formatter given the same record: the call the gateway's
    middleware made (`_plain`, request id in context, logged from gateway.middleware)."""
    import shared.logging as shared_logging
    from shared.logging import access_line, printable, register_secrets

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        register_secrets(["cpk_rid_secret_9876"])
        lines: list[Any] = []
        configure_logging(_settings(log_format=log_format), sink=lines.append)  # after tzset
        path = printable(path, limit=512)  # as the middleware passes it
        stamp: datetime | None = None

        def as_the_middleware(record: Any) -> None:
            nonlocal stamp
            if whole_second:
                record["time"] = record["time"].replace(microsecond=0)
            stamp = record["time"]
            record["name"] = "gateway.middleware"

        with logger.contextualize(request_id=request_id):
            logger.bind(_plain=True).patch(as_the_middleware).info(
                "{} {} {} {:.1f}ms", method, path, status, elapsed_ms
            )
        assert stamp is not None
        at = _epoch_ns(stamp) + 999  # below a microsecond: dropped, as datetime.now() does
        monkeypatch.setattr(shared_logging, "_now_ns", lambda: at)
        access_line(method, path, status, elapsed_ms, request_id)
        assert len(lines) == 2
        assert lines[1] == str(lines[0])
        assert lines[1].count("\n") == 1 and "cpk_rid_secret_9876" not in lines[1]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_access_line_is_off_above_info() -> None:
    from shared.logging import access_line

    lines: list[str] = []
    configure_logging(_settings(log_level="WARNING"), sink=lines.append)
    access_line("GET", "/p", 200, 1.0, _RID)
    assert lines == []
    configure_logging(_settings(log_level="DEBUG"), sink=lines.append)
    access_line("GET", "/p", 200, 1.0, _RID)
    assert len(lines) == 1 and " GET /p 200 1.0ms request_id=" in lines[0]
    logger.remove()


@pytest.mark.parametrize(
    "text",
    ["plain", "tab\there", "nbsp\u00a0soft\u00adhyphen", "\x85", "\u2028\u2029", "\x7f\x9f é"],
)
def test_printable_and_mask_shortcuts_change_nothing(text: str) -> None:
    from shared.logging import _BEARER, _CONTROL, mask, printable

    escaped = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    assert printable(text) == escaped
    for credential in (f"Bearer {text}x", f"bEaReR\t{text}x", f"BEARER  {text}"):
        assert mask(credential) == _BEARER.sub(r"\1***", credential)
    assert mask(text) == _BEARER.sub(r"\1***", text) == text
