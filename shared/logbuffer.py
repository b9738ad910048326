"""The log buffer: lines kept in memory and written to the stream in batches.

A record at WARNING or above is written at once, with everything before it; the others
within `FLUSH_INTERVAL_S` (sooner when `FLUSH_BYTES` wait), and all that is left at exit,
at the end of a multiprocessing (Celery pool) child and when logging is configured again.
`shared.logging` installs one in front of stderr for loguru and the access line.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import weakref
from typing import TextIO

FLUSH_INTERVAL_S = 0.1  # an INFO line reaches the stream within this
FLUSH_BYTES = 64 * 1024  # or as soon as this much is waiting
# While the stream does not take what is written (a stalled log driver), lines below
# WARNING beyond this many characters waiting are dropped and counted, not kept without end.
MAX_WAITING = 8 * 1024 * 1024
_URGENT_LEVEL = 30  # WARNING: such a record is written at once, with all before it
_URGENT_WAIT_S = 1.0  # how long an urgent line waits for another thread's write
_PIPE_BUF = 4096  # a write to a pipe of at most this many bytes is never interleaved


class LineBuffer:
    """A loguru sink that keeps lines in memory and writes them to `stream` in batches: at
    once for a record at WARNING or above, when more than `limit` characters wait, otherwise
    within `interval` seconds (a daemon thread, started at the first line), and at `close`.

    Lines keep their order: one thread writes at a time and takes all that waits, oldest
    first. No lock is held while writing, and a thread that finds another one writing leaves
    its lines to that one (which looks again before it stops), so a stream that itself logs
    (Celery redirects stderr into logging, which is routed to loguru) cannot deadlock it; a
    line logged by the writing thread while it writes, an echo of what it writes, is dropped
    (loguru drops such a re-entrant record too).

    A hard kill (SIGKILL, os._exit) loses what waits: at most `interval` seconds of lines
    below WARNING. Once closed, a line is written at once. When the stream stops taking
    lines, lines below WARNING are dropped beyond `MAX_WAITING` characters and the next
    write says how many. A stream with a file descriptor is written with os.write, in
    chunks of whole lines of at most `_PIPE_BUF` bytes where lines allow (not interleaved
    with other processes' lines on a shared pipe), each written in full (a signal that
    interrupts a write does not cut the batch).

    It has no `write` method on purpose: loguru takes an object with one for a stream and
    flushes it after every line; a callable it just calls.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = FLUSH_INTERVAL_S,
        limit: int = FLUSH_BYTES,
    ) -> None:
        self.stream = stream
        self._interval = interval
        self._limit = limit
        self._closed = False
        self._init_state()
        _buffers.add(self)

    def _init_state(self) -> None:
        # Also in a forked child: the parent's lines are the parent's to write, and its locks
        # and flusher thread did not come along.
        self._lines: list[str] = []
        self._size = 0
        self._dropped = 0
        # Guards _lines, _size and _dropped, held only to touch them (re-entrant: a signal
        # handler that logs may run while its thread holds it).
        self._lock = threading.RLock()
        self._writer = threading.Lock()  # held by the one thread writing to the stream
        self._local = threading.local()  # .writing: this thread is inside stream.write
        self._pending = threading.Event()  # set when a line waits for the flusher
        self._closing = threading.Event()  # cuts the flusher's wait short
        self._thread: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        record = getattr(message, "record", None)  # set on loguru's messages
        self.put(message, urgent=record is not None and record["level"].no >= _URGENT_LEVEL)

    def put(self, line: str, *, urgent: bool = False) -> None:
        """Add a line (ending in a newline); `urgent`: write it, and all before it, now."""
        if getattr(self._local, "writing", False):
            return  # logged by the stream we are writing to: an echo (see the class's note)
        start = False
        with self._lock:
            if not urgent and self._size > MAX_WAITING:
                self._dropped += 1
                return
            self._lines.append(line)
            self._size += len(line)
            now = urgent or self._closed or self._size > self._limit
            if not now and len(self._lines) == 1:  # the first line since the last write
                start = self._thread is None  # once per process
                if start:
                    self._thread = threading.Thread(
                        target=self._run, name="log-flusher", daemon=True
                    )
                self._pending.set()
        if start and self._thread is not None:
            _flush_at_process_end()
            self._thread.start()
        if now:
            # A warning waits (a little) for another thread's write to end, so it is out
            # before the call returns.
            self._drain(_URGENT_WAIT_S if urgent else None)

    def flush(self, timeout: float = 5.0) -> None:
        """Write what waits now; when another thread is writing, wait (up to `timeout`
        seconds) until it has written it."""
        self._drain(timeout)

    def close(self) -> None:
        """Write what waits and stop the flusher; later lines are written at once."""
        with self._lock:
            self._closed = True
        self._closing.set()
        self._pending.set()
        self._drain(5.0)

    def _drain(self, timeout: float | None = None) -> None:
        """Write all that waits, unless another thread is writing (then, unless `timeout`
        is given, leave it to that one: it looks again before it stops)."""
        while True:
            if timeout is None:
                if not self._writer.acquire(blocking=False):
                    return
            elif not self._writer.acquire(timeout=timeout):
                return
            self._local.writing = True
            try:
                while True:
                    with self._lock:
                        if not self._lines:
                            break
                        lines, self._lines = self._lines, []
                        self._size = 0
                        if self._dropped:
                            lines.insert(0, f"{self._dropped} log lines dropped: stderr stalled\n")
                            self._dropped = 0
                    # Closed, broken or odd: there is nowhere left to write them, and the
                    # writer must stay alive for the next lines.
                    with contextlib.suppress(Exception):
                        self._write(lines)
            finally:
                self._local.writing = False
                self._writer.release()
            with self._lock:  # a line put while we released, by a thread that left it to us
                if not self._lines:
                    return

    def _write(self, lines: list[str]) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # no descriptor: a stream in memory
            fd = None
        if not isinstance(fd, int):
            self.stream.write("".join(lines))
            self.stream.flush()
            return
        self.stream.flush()  # what others wrote to the stream itself goes first
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        chunk = b""
        for line in lines:
            data = line.encode(encoding, "backslashreplace")
            if chunk and len(chunk) + len(data) > _PIPE_BUF:
                _write_all(fd, chunk)
                chunk = b""
            chunk += data
        if chunk:
            _write_all(fd, chunk)

    def _before_fork(self) -> None:
        # A child forked during a write would inherit the stream's own lock, held by a
        # thread it does not have: fork between writes (waiting a little for one to end).
        self._forking = self._writer.acquire(timeout=_URGENT_WAIT_S)

    def _after_fork_in_parent(self) -> None:
        if getattr(self, "_forking", False):
            self._forking = False
            self._writer.release()

    def _run(self) -> None:
        while not self._closed:  # close() sets _closed, then _pending: the wait always ends
            self._pending.wait()
            if self._closed:
                return
            self._closing.wait(self._interval)
            self._pending.clear()
            self._drain()


_buffers: weakref.WeakSet[LineBuffer] = weakref.WeakSet()
_buffer: LineBuffer | None = None  # the one `install` set up, if any


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _buffers_before_fork() -> None:
    for buffer in list(_buffers):
        buffer._before_fork()


def _buffers_after_fork_in_parent() -> None:
    for buffer in list(_buffers):
        buffer._after_fork_in_parent()


def _buffers_after_fork() -> None:
    for buffer in list(_buffers):
        buffer._init_state()


def flush_logs() -> None:
    """Write the lines that wait in the log buffer now (e.g. before a process ends by os._exit:
    atexit, which flushes them otherwise, does not run then)."""
    if _buffer is not None:
        _buffer.flush()


def install(stream: TextIO) -> LineBuffer:
    """A new buffer on `stream`, the one `flush_logs` and the exit flush act on; the one
    installed before is closed first (what waits in it is written)."""
    global _buffer
    close_buffer()
    _buffer = LineBuffer(stream)
    return _buffer


def close_buffer() -> None:
    """Write what waits in the installed buffer and stop it."""
    global _buffer
    if _buffer is not None:
        _buffer.close()
    _buffer = None


os.register_at_fork(
    before=_buffers_before_fork,
    after_in_parent=_buffers_after_fork_in_parent,
    after_in_child=_buffers_after_fork,
)
atexit.register(close_buffer)
_finalizer_pid = 0


def _flush_at_process_end() -> None:
    """atexit serves a process whose interpreter exits; a multiprocessing child ends with
    os._exit once it has run multiprocessing's finalizers: have one of those write what
    waits too (once per process). A billiard child (Celery's pool) skips them: the pipeline's
    beat calls `flush_logs` when its pool child shuts down."""
    global _finalizer_pid
    if _finalizer_pid != os.getpid():
        from multiprocessing.util import Finalize

        Finalize(None, close_buffer, exitpriority=-100)  # after the finalizers that may log
        _finalizer_pid = os.getpid()


def log_stream() -> TextIO:
    """sys.stderr, unless it is itself routed into logging (a Celery worker redirects it to a
    logger, whose records come back to loguru): then the process's own stderr, which the
    lines would otherwise never reach."""
    stream = sys.stderr
    if isinstance(getattr(stream, "logger", None), logging.Logger) and sys.__stderr__:
        return sys.__stderr__
    return stream


def should_colorize(stream: TextIO) -> bool:
    """What loguru decides for a stream sink (colour on a terminal): it is given a callable."""
    try:
        return bool(stream.isatty())
    except Exception:
        return False
