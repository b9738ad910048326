"""Loguru set-up shared by every process: text or JSON lines, secrets masked.

Every record passes through a patcher that masks configured secrets and anything
shaped like a bearer credential, so a secret cannot leak even through an
exception message from a third-party library.

Context (`request_id` in the gateway, `trade_id` and `stage` in the pipeline) is
bound with `logger.contextualize` where a request or an entry is served, so every
line written meanwhile carries it, however deep it is logged. Standard-library
logging (uvicorn, tortoise, the bittensor SDK) is routed through the same sink in
the caller's thread, so it carries that context too.

Lines are written in batches (`shared.logbuffer`): a record at WARNING or above at once,
with everything before it, the others within `FLUSH_INTERVAL_S`, and all that is left at
exit and when logging is configured again. The gateway's access line, one per request, is built
here by `access_line` rather than through loguru (a quarter of a cached request's cost), in
the same format and through the same sink, so lines keep their order.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from logging.handlers import QueueHandler
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from loguru import logger

from shared.logbuffer import close_buffer, install, log_stream, should_colorize

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
    if "bearer" not in text.lower():  # no match possible: skip the regex (a hot-path saving)
        return text
    return _BEARER.sub(r"\1" + _MASK, text)


# Control characters, line and paragraph separators, and the bidirectional overrides and
# isolates (which would show user data in another order than it has).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, limit: int | None = None) -> str:
    """`text` with control characters escaped (\\n, \\x1b, ...) so user data can never start
    a forged log line or drive a terminal; cut to `limit` characters when given."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():  # every character _CONTROL matches is non-printable: nothing to do
        return text
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


_JSON_RAW_BREAKS = re.compile("[\x85\u2028\u2029]")
_CHAIN_MAX = 5  # causes / contexts kept below an exception in a JSON record


def _type_name(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    name = exc_type.__qualname__
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


def _safe_str(value: BaseException) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the record
        return f"<unprintable {type(value).__name__}>"


def exception_fields(
    exc_type: type[BaseException] | None,
    value: BaseException | None,
    tb: TracebackType | None,
    _depth: int = 0,
) -> dict[str, Any]:
    """An exception as JSON fields: type, message, its frames (oldest first) and, when it was
    raised from or while handling another, that one as `cause`. Message and source lines are
    masked; control characters are left to the JSON encoder, which escapes them."""
    if exc_type is None:
        exc_type = type(value) if value is not None else BaseException
    fields: dict[str, Any] = {
        "type": _type_name(exc_type),
        "message": mask(_safe_str(value)) if value is not None else "",
        "traceback": [
            {
                "file": frame.filename,
                "line": frame.lineno,
                "function": frame.name,
                "code": mask(frame.line or ""),
            }
            for frame in traceback.extract_tb(tb)
        ],
    }
    if value is not None and _depth < _CHAIN_MAX:
        cause = value.__cause__
        if cause is None and not value.__suppress_context__:
            cause = value.__context__
        if cause is not None and cause is not value:
            fields["cause"] = exception_fields(type(cause), cause, cause.__traceback__, _depth + 1)
    return fields


def _json_format(record: Record) -> str:
    payload: dict[str, Any] = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name,
        "msg": record["message"],
        "logger": record["name"],
    }
    payload.update({k: v for k, v in record["extra"].items() if k[0] != "_"})
    exc = record["exception"]
    if exc is not None:
        payload["exception"] = exception_fields(exc.type, exc.value, exc.traceback)
    record["extra"]["_json"] = _json_line(payload)
    return "{extra[_json]}\n"


def _json_line(payload: dict[str, Any]) -> str:
    line = orjson.dumps(payload, default=str).decode()
    if not line.isascii() and _JSON_RAW_BREAKS.search(line):
        # Valid unescaped in JSON, but line breaks to str.splitlines() and some log shippers.
        line = _JSON_RAW_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
    return line


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


# The bittensor SDK's own logging: its messages carry rich-style colour tags and emoji
# shortcodes that its formatter turns into ANSI escapes; routed through loguru, they are
# reduced to plain text.
_SDK_LOGGER = "bittensor"
_SDK_MARKUP = re.compile(
    r"\[/?(?:red|blue|green|magenta|yellow|orange)\]"
    r"|:(?:white_heavy_check_mark|cross_mark|satellite|warning|arrow_right|hourglass):\s?"
    r"|\x1b\[[0-9;]*[A-Za-z]"
)


def _from_sdk(name: str) -> bool:
    return name == _SDK_LOGGER or name.startswith(_SDK_LOGGER + ".")


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, tortoise, celery, the bittensor SDK) through loguru and
    its masking, in the caller's thread (so the caller's bound context is kept), under the
    stdlib logger's name and call site."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        if _from_sdk(record.name):
            message = _SDK_MARKUP.sub("", message)

        def origin(entry: Record) -> None:
            entry["name"] = record.name
            entry["function"] = record.funcName
            entry["line"] = record.lineno
            entry["module"] = record.module

        # No args: the message is never parsed as a format string (it may hold "{...}").
        logger.patch(origin).opt(exception=record.exc_info).log(level, message)


def _route_stdlib() -> None:
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = [_InterceptHandler()]
        logging.getLogger(name).propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def adopt_sdk_logging() -> None:
    """Undo what importing the bittensor SDK does to logging, once it has been imported.

    Its logging machine (bittensor/utils/btlogging/loggingmachine.py) hangs a QueueHandler
    on the `bittensor` logger, feeding a listener thread that prints each record a second
    time, ANSI-coloured, to stdout; and at import it strips the handlers of every logger
    that exists and sets it to CRITICAL (uvicorn's error log and the substrate client's
    warnings would be lost). Here its records go through our intercept only (propagated to
    the root logger, once, in the caller's thread), its listener is left without a console
    handler, and the loggers it silenced are given back to the root's level. Idempotent;
    a no-op while the SDK is not imported.
    """
    module = sys.modules.get("bittensor.utils.btlogging")
    machine = getattr(module, "logging", None)
    if machine is None:
        return
    primary = set(getattr(machine, "_primary_loggers", ())) | {_SDK_LOGGER}
    for name in primary:
        sdk = logging.getLogger(name)
        for handler in list(sdk.handlers):
            if isinstance(handler, QueueHandler):
                sdk.removeHandler(handler)
        sdk.propagate = True
    handlers = getattr(machine, "_handlers", None)
    if isinstance(handlers, list):
        # Its file handler (BT_LOGGING_RECORD_LOG) is an explicit opt-in: only the console goes.
        handlers[:] = [h for h in handlers if type(h) is not logging.StreamHandler]
        listener = getattr(machine, "_listener", None)
        if listener is not None:
            listener.handlers = tuple(handlers)
    for existing in list(logging.root.manager.loggerDict.values()):
        if (
            isinstance(existing, logging.Logger)
            and existing.name not in primary
            and existing.level == logging.CRITICAL
        ):
            existing.setLevel(logging.NOTSET)
    if any(isinstance(h, _InterceptHandler) for h in logging.root.handlers):
        _route_stdlib()  # configured already: put back the uvicorn handlers it stripped


# --- the access line -------------------------------------------------------------------------
# One line per request, built here with f-strings instead of through loguru (~30 µs a line):
# exactly the line loguru writes, in either format, for
# `logger.bind(_plain=True).info("{} {} {} {:.1f}ms", ...)` called in gateway.middleware with
# `request_id` in context (tests compare the two). In text format it is never coloured, even
# where loguru colours its own lines on a terminal.

ACCESS_LOGGER = "gateway.middleware"  # the `name` those records carried
_ACCESS_LEVEL = 20  # INFO

_access_emit: Callable[[str], object] | None = None  # None: access lines are off
_access_json = False


def _clock_at(second: int) -> tuple[int, str, str, str]:
    """Local time at `second` as loguru stamps a record: (second, YYYY-MM-DDTHH:MM:SS, the
    offset as loguru's `Z` writes it, the offset as datetime.isoformat() writes it)."""
    local = time.localtime(second)
    offset = local.tm_gmtoff
    zone = timezone(timedelta(seconds=offset), local.tm_zone)
    return (
        second,
        time.strftime("%Y-%m-%dT%H:%M:%S", local),
        _loguru_offset(offset),
        datetime.fromtimestamp(second, zone).isoformat()[19:],
    )


def _loguru_offset(offset: int) -> str:
    """loguru's `Z` token (loguru/_datetime.py, _format_timezone) for an offset in seconds."""
    sign = "+" if offset >= 0 else "-"
    (hours, minutes), seconds = divmod(abs(offset // 60), 60), abs(offset) % 60
    text = f"{sign}{hours:02d}:{minutes:02d}"
    return text + f":{seconds:02d}" if seconds else text


# Formatted once a second; one tuple, replaced whole, so a thread never reads half of it.
_clock: tuple[int, str, str, str] = (-1, "", "", "")
_now_ns = time.time_ns  # what loguru's datetime.now() reads, in integers (tests fix it)


def access_line(method: str, path: str, status: int, elapsed_ms: float, request_id: str) -> None:
    """Log the gateway's access line for one request, as loguru would at INFO (see above).

    `path` is escaped and cut by the caller (`printable(path, limit=...)`); the message and
    the request id are escaped (and the id masked) here as every loguru record is. A no-op
    while the configured level is above INFO.
    """
    global _clock
    emit = _access_emit
    if emit is None:
        return
    message = printable(f"{method} {path} {status} {elapsed_ms:.1f}ms")
    rid = printable(mask(request_id))
    now = _now_ns()
    second = now // 1_000_000_000
    clock = _clock
    if clock[0] != second:
        clock = _clock = _clock_at(second)
    _, prefix, text_offset, iso_offset = clock
    if _access_json:
        micros = now // 1000 % 1_000_000
        fraction = f".{micros:06d}" if micros else ""  # as isoformat(): none at a whole second
        payload = {
            "ts": f"{prefix}{fraction}{iso_offset}",
            "level": "INFO",
            "msg": message,
            "logger": ACCESS_LOGGER,
            "request_id": rid,
        }
        emit(_json_line(payload) + "\n")
    else:
        millis = now // 1_000_000 % 1000
        emit(
            f"{prefix}.{millis:03d}{text_offset} INFO    {ACCESS_LOGGER} "
            f"{message} request_id={rid}\n"
        )


def configure_logging(settings: Settings, *, sink: Any = None) -> None:
    """Set up loguru (and the access line) for `settings`: to `sink` when given (a callable
    taking a line, or an object with `write`; unbuffered), else to stderr through a
    `LineBuffer`. Lines already waiting in the previous buffer are written first."""
    global _access_emit, _access_json, _clock
    register_secrets(settings.secret_values())
    logger.remove()
    _access_emit = None
    close_buffer()
    logger.configure(patcher=_patch, extra={})
    fmt: Any = _json_format if settings.log_format == "json" else _text_format
    emit: Callable[[str], object]
    if sink is not None:
        target: Any = sink
        colorize = False
        emit = sink.write if hasattr(sink, "write") else sink
    else:
        stream = log_stream()
        buffer = target = install(stream)
        emit = buffer.put
        colorize = should_colorize(stream)
    logger.add(
        target,
        level=settings.log_level,
        format=fmt,
        backtrace=False,
        diagnose=False,
        colorize=colorize,
    )
    _access_json = settings.log_format == "json"
    _clock = (-1, "", "", "")  # the time zone may have changed (time.tzset)
    if logger.level(settings.log_level).no <= _ACCESS_LEVEL:
        _access_emit = emit
    _route_stdlib()
    adopt_sdk_logging()  # when the SDK was imported first; else shared.chain calls it after
