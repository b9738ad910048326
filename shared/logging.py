"""Loguru set-up shared by every process: text or JSON lines, secrets masked.

Every record passes through a patcher that masks configured secrets and anything
shaped like a bearer credential, so a secret cannot leak even through an
exception message from a third-party library.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

    from shared.settings import Settings

_MASK = "***"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_secrets: list[str] = []


def mask(text: str) -> str:
    """Mask every known secret and bearer credential in `text`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return _BEARER.sub(r"\1" + _MASK, text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, *, limit: int | None = None) -> str:
    """`text` with control characters escaped (\\n, \\x1b, ...) so user data can never start
    a forged log line or drive a terminal; cut to `limit` characters when given."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def register_secrets(values: Iterable[str]) -> None:
    """Add values (e.g. a token just created) that must never appear in a log line."""
    for value in values:
        if len(value) >= 6 and value not in _secrets:
            _secrets.append(value)
    _secrets.sort(key=len, reverse=True)


def _patch(record: Record) -> None:
    message = record["message"]
    if not record["extra"].get("_plain"):  # _plain: built by our code from non-secret parts
        message = mask(message)
    record["message"] = printable(message)
    for key, value in list(record["extra"].items()):
        if isinstance(value, str) and key[0] != "_":
            # Bound fields carry user data (paths, tweets, replies): one line per record.
            record["extra"][key] = printable(mask(value))


def _json_format(record: Record) -> str:
    payload: dict[str, Any] = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name,
        "msg": record["message"],
        "logger": record["name"],
    }
    payload.update({k: v for k, v in record["extra"].items() if k[0] != "_"})
    if record["exception"] is not None:
        exc = record["exception"]
        payload["exception"] = mask(f"{exc.type.__name__ if exc.type else ''}: {exc.value}")
    record["extra"]["_json"] = orjson.dumps(payload, default=str).decode()
    return "{extra[_json]}\n"


_TRACEBACK_PREFIX = "  | "


def _traceback_block(text: str) -> str:
    """A traceback as continuation lines of its record: each line prefixed (so nothing in an
    exception message, which may carry user data, can start a line at column 0 and pass for
    a record of its own) and its other control characters escaped."""
    lines = text.rstrip("\n").split("\n")
    # A field value is substituted, never parsed as format or markup: braces stay as they are.
    return "".join(f"{_TRACEBACK_PREFIX}{printable(line)}\n" for line in lines)


def _text_format(record: Record) -> str:
    extra = " ".join(f"{k}={v}" for k, v in record["extra"].items() if k[0] != "_")
    record["extra"]["_kv"] = extra
    tail = ""
    exc = record["exception"]
    if exc is not None:
        # Rendered here, masked, rather than by loguru's {exception}, which is not.
        lines = traceback.format_exception(exc.type, exc.value, exc.traceback)
        record["extra"]["_exc"] = _traceback_block(mask("".join(lines)))
        tail = "{extra[_exc]}"
    return (
        "<green>{time:YYYY-MM-DDTHH:mm:ss.SSSZ}</green> <level>{level: <7}</level> "
        "<cyan>{name}</cyan> {message} <dim>{extra[_kv]}</dim>\n" + tail
    )


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, tortoise, celery) through loguru and its masking."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(settings: Settings, *, sink: Any = None) -> None:
    register_secrets(settings.secret_values())
    logger.remove()
    logger.configure(patcher=_patch, extra={})
    fmt: Any = _json_format if settings.log_format == "json" else _text_format
    logger.add(
        sink if sink is not None else sys.stderr,
        level=settings.log_level,
        format=fmt,
        backtrace=False,
        diagnose=False,
        colorize=False if sink is not None else None,
    )
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = [_InterceptHandler()]
        logging.getLogger(name).propagate = False
    logging.getLogger("uvicorn.access").disabled = True
