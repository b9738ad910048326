"""Text-format tracebacks: an exception message (user data: a tweet, a reply, a path) can never
forge a log record of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger
from pydantic import SecretStr

from shared.logging import configure_logging
from shared.settings import Settings

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
