"""The log buffer (shared/logbuffer.py) as logging uses it: lines keep their order, warnings
are written at once, the rest within the flush interval, and what waits is written when the
process ends, however it ends."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger
from pydantic import SecretStr

from shared.logging import configure_logging
from shared.settings import Settings
from tests.conftest import run_python

_RID = "584395d8385347899a87be5fcf328a20"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"log_format": "text", "log_level": "INFO", **overrides}
    return Settings(_env_file=None, event_signing_key=SecretStr("k" * 32), **values)  # type: ignore[call-arg]


class _Stream(io.StringIO):
    """A stream that counts the writes it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Stream]:
    """Logging set up as a process does it, to a stand-in stderr (through the line buffer)."""
    stream = _Stream()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(_settings())
    yield stream
    logger.remove()
    from shared.logbuffer import close_buffer

    close_buffer()


def test_loguru_and_access_lines_keep_their_order(stderr: _Stream) -> None:
    from shared.logbuffer import flush_logs
    from shared.logging import access_line

    with logger.contextualize(request_id="r1"):
        logger.info("line-1")
        access_line("GET", "/line-2", 200, 1.0, "r1")
        logger.debug("not logged at INFO")
        logger.info("line-3")
        access_line("GET", "/line-4", 200, 1.0, "r1")
        logger.info("line-5")
    flush_logs()
    lines = stderr.getvalue().splitlines()
    assert [line.split("line-")[1][0] for line in lines] == ["1", "2", "3", "4", "5"]
    assert all(line.endswith("request_id=r1") for line in lines)
    assert stderr.writes <= 2  # in batches (one, unless the flusher came in between)


def test_a_warning_is_written_at_once_with_what_came_before(stderr: _Stream) -> None:
    from shared.logging import access_line

    logger.info("info-1")
    access_line("GET", "/access-2", 200, 1.0, _RID)
    logger.warning("warning-3")  # no flush, no wait
    text = stderr.getvalue()
    assert text.index("info-1") < text.index("/access-2") < text.index("warning-3")


def test_an_info_line_is_written_within_the_flush_interval(stderr: _Stream) -> None:
    from shared.logbuffer import FLUSH_INTERVAL_S
    from shared.logging import access_line

    access_line("GET", "/soon", 200, 1.0, _RID)
    logged = time.monotonic()
    while "/soon" not in stderr.getvalue() and time.monotonic() - logged < 5:
        time.sleep(0.005)
    waited = time.monotonic() - logged
    assert "/soon" in stderr.getvalue()
    assert waited < FLUSH_INTERVAL_S + 0.4  # the interval, and room for a busy machine
    logger.info("again")  # the flusher serves the next batch too
    logged = time.monotonic()
    while "again" not in stderr.getvalue() and time.monotonic() - logged < 5:
        time.sleep(0.005)
    assert time.monotonic() - logged < FLUSH_INTERVAL_S + 0.4


def test_configuring_again_writes_what_waits(
    stderr: _Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.logbuffer import FLUSH_INTERVAL_S
    from shared.logging import access_line

    logger.info("pending-1")
    access_line("GET", "/pending-2", 200, 1.0, _RID)
    monkeypatch.setattr(sys, "stderr", _Stream())
    configure_logging(_settings())
    text = stderr.getvalue()
    assert "pending-1" in text and "/pending-2" in text
    for _ in range(3):  # and the flusher of a buffer set aside ends
        logger.info("more")
        time.sleep(FLUSH_INTERVAL_S / 2)  # the flusher of this one is asleep
        configure_logging(_settings())
    deadline = time.monotonic() + 5
    while _flushers() > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _flushers() == 0


def _flushers() -> int:
    import threading

    return sum(1 for t in threading.enumerate() if t.name == "log-flusher" and t.is_alive())


def test_the_buffer_writes_when_full_or_closed_and_otherwise_waits() -> None:
    from shared.logbuffer import LineBuffer

    stream = _Stream()
    buffer = LineBuffer(stream, interval=60, limit=100)
    handler = logger.add(buffer, format="{message}")
    try:
        buffer.put("a" * 40 + "\n")
        logger.info("b" * 40)
        assert stream.getvalue() == ""  # waits (for a minute, here)
        buffer.put("c" * 40 + "\n")  # over the limit
        assert stream.getvalue().splitlines() == ["a" * 40, "b" * 40, "c" * 40]
        logger.error("e")  # ERROR and above too, as WARNING
        assert stream.getvalue().endswith("\ne\n") and stream.writes == 2
        logger.info("last")
        buffer.close()
        assert stream.getvalue().endswith("\nlast\n")
        buffer.put("after close\n")  # at once
        assert stream.getvalue().endswith("\nafter close\n")
        assert buffer._thread is not None
        buffer._thread.join(5)  # its flusher, asleep for a minute, is woken and ends
        assert not buffer._thread.is_alive()
    finally:
        logger.remove(handler)


class _StalledStream(_Stream):
    """A stream whose writes block until `go` is set (a log driver that stopped reading)."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.go = threading.Event()

    def write(self, text: str) -> int:
        self.go.wait(10)
        return super().write(text)


def test_a_stalled_stream_costs_bounded_memory_and_says_what_it_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import shared.logbuffer
    from shared.logbuffer import LineBuffer

    monkeypatch.setattr(shared.logbuffer, "MAX_WAITING", 1000)
    stream = _StalledStream()
    buffer = LineBuffer(stream, interval=60, limit=1)
    writer = threading.Thread(target=buffer.put, args=("first\n",))
    writer.start()  # over the limit: this thread writes, and blocks in the stream
    time.sleep(0.1)
    for n in range(500):
        buffer.put(f"info-{n:03d}\n")  # left to the blocked writer; beyond 1000 chars, dropped
    assert buffer._size <= 1000 + 20
    stream.go.set()
    writer.join(5)
    buffer.close()
    lines = stream.getvalue().splitlines()
    kept = [line for line in lines if line.startswith("info-")]
    assert lines[0] == "first" and 0 < len(kept) < 500
    assert f"{500 - len(kept)} log lines dropped: stderr stalled" in lines


def test_a_batch_is_written_whole_in_line_aligned_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a descriptor: a write that takes only part of a chunk (a signal, a full pipe) is
    continued, and chunks are whole lines of at most 4096 bytes (atomic on a pipe)."""
    import os

    import shared.logbuffer
    from shared.logbuffer import LineBuffer

    read_end, write_end = os.pipe()
    chunks: list[int] = []
    real_write = os.write

    def partial_write(fd: int, data: Any) -> int:
        chunks.append(len(data))
        return real_write(fd, bytes(data[:1000]))  # takes at most 1000 bytes at a time

    monkeypatch.setattr(shared.logbuffer.os, "write", partial_write)
    with os.fdopen(write_end, "w", encoding="utf-8") as stream:
        buffer = LineBuffer(stream, interval=60, limit=1 << 20)
        lines = [f"{n:04d} " + "x" * 95 + "\n" for n in range(100)]  # 101 bytes each
        for line in lines:
            buffer.put(line)
        buffer.close()
    got = b""
    with os.fdopen(read_end, "rb") as reader:
        got = reader.read()
    assert got.decode() == "".join(lines)
    assert max(chunks) <= 4096 and len(chunks) > 3  # whole lines, at most 4096 bytes a chunk
    assert chunks[0] == 4096 // len(lines[0]) * len(lines[0])


def test_a_write_that_raises_does_not_stop_the_flusher() -> None:
    from shared.logbuffer import LineBuffer

    class Flaky(_Stream):
        def write(self, text: str) -> int:
            if self.writes == 0:
                self.writes += 1
                raise RuntimeError("reentrant call")
            return super().write(text)

    stream = Flaky()
    buffer = LineBuffer(stream, interval=0.01)
    buffer.put("lost\n")
    deadline = time.monotonic() + 5
    while stream.writes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    buffer.put("kept\n")
    while "kept" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "kept\n"
    buffer.close()


def test_a_stream_that_logs_neither_deadlocks_nor_loops() -> None:
    """Celery's worker replaces stderr with a proxy that logs what is written to it, and that
    logging is routed to loguru: writing a line brings it back. From several threads, with
    the flusher writing meanwhile, everything ends, each line written once."""
    import logging
    import threading

    from celery.utils.log import LoggingProxy

    from shared.logbuffer import LineBuffer

    written: list[str] = []
    redirected = logging.getLogger("celery.redirected")
    configure_logging(_settings(), sink=lambda line: None)  # stdlib routed to loguru
    logger.remove()
    proxy = LoggingProxy(redirected, logging.WARNING)
    real_write = proxy.write

    def write(data: str) -> int:
        written.append(data)
        return int(real_write(data))

    proxy.write = write  # type: ignore[method-assign]
    buffer = LineBuffer(proxy, interval=0.01)
    logger.add(buffer, format="{message}", level="INFO")

    def log(name: str) -> None:
        for n in range(200):
            (logger.warning if n % 20 == 0 else logger.info)(f"{name}-{n}")
            if n % 50 == 0:
                time.sleep(0.02)  # the flusher writes meanwhile

    threads = [threading.Thread(target=log, args=(f"t{i}",), daemon=True) for i in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        closing = threading.Thread(target=buffer.close, daemon=True)
        closing.start()
        closing.join(20)
        assert not any(t.is_alive() for t in [*threads, closing])  # no deadlock
    finally:
        logger.remove()
    lines = "".join(written).splitlines()
    assert sorted(lines) == sorted(f"t{i}-{n}" for i in range(3) for n in range(200))


def test_stderr_routed_into_logging_is_passed_by(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Celery's worker, lines go to the process's own stderr, not back into logging."""
    import logging

    from celery.utils.log import LoggingProxy

    from shared.logbuffer import flush_logs

    real = _Stream()
    monkeypatch.setattr(sys, "stderr", LoggingProxy(logging.getLogger("celery.redirected")))
    monkeypatch.setattr(sys, "__stderr__", real)
    configure_logging(_settings())
    try:
        logger.info("to the real stderr")
        flush_logs()
        assert "to the real stderr" in real.getvalue()
    finally:
        logger.remove()
        from shared.logbuffer import close_buffer

        close_buffer()


# A fresh process: lines that wait in the buffer when it ends, however it ends.
_EXIT_SCRIPT = """
import os, sys
from pydantic import SecretStr
from loguru import logger
from shared.settings import Settings
from shared.logging import access_line, configure_logging

configure_logging(Settings(_env_file=None, log_format="text", log_level="INFO",
                           event_signing_key=SecretStr("k" * 32)))
logger.info("info-1")
logger.warning("warning-2")
logger.info("info-3")
access_line("GET", "/access-4", 200, 1.0, "rid-5")
if sys.argv[1] == "fork":
    pid = os.fork()
    if pid == 0:
        logger.info("child-6")
        sys.exit(0)
    os.waitpid(pid, 0)
elif sys.argv[1] == "pool":  # a multiprocessing (or Celery's billiard) child ends by os._exit
    import multiprocessing
    child = multiprocessing.get_context("fork").Process(target=logger.info, args=("child-6",))
    child.start()
    child.join()
elif sys.argv[1] == "hard":
    os._exit(0)
elif sys.argv[1] == "crash":
    raise RuntimeError("crash-7")
"""


@pytest.mark.parametrize("ending", ["normal", "crash", "fork", "pool", "hard"])
def test_lines_waiting_at_exit(ending: str) -> None:
    proc = run_python(_EXIT_SCRIPT, ending, timeout=60)
    order = [
        line.split()[3]
        for line in proc.stderr.splitlines()
        if " INFO " in line or " WARNING " in line
    ]
    if ending == "hard":  # os._exit, SIGKILL: what waited below WARNING is lost
        assert order == ["info-1", "warning-2"]
    elif ending in ("fork", "pool"):  # the child writes its own lines, not the parent's
        assert order in (
            ["info-1", "warning-2", "child-6", "info-3", "GET"],
            ["info-1", "warning-2", "info-3", "GET", "child-6"],
        )
    else:
        assert order == ["info-1", "warning-2", "info-3", "GET"]
        assert "gateway.middleware GET /access-4 200 1.0ms request_id=rid-5" in proc.stderr
        assert ("RuntimeError: crash-7" in proc.stderr) == (ending == "crash")
