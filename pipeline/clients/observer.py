"""Who hears of outside-API traffic: one `RequestObserver` per process (the pipeline's
Prometheus metrics register one). The HTTP client tells it of every attempt (service,
outcome, seconds) and of every call that failed for good; a failing observer never breaks
a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from loguru import logger

from pipeline.clients.errors import ExternalAPIError, attempt_outcome


class RequestObserver(Protocol):
    """Told about outside-API traffic; must be cheap and must not raise (errors are ignored)."""

    def attempt(self, service: str, outcome: str, seconds: float) -> None:
        """One HTTP attempt ended; `outcome` is `attempt_outcome(error)`."""

    def failed(self, service: str, error: str) -> None:
        """A call failed for good (retries spent or not retryable); `error` is its code."""


_observer: RequestObserver | None = None


def set_request_observer(observer: RequestObserver | None) -> RequestObserver | None:
    """Register the process's observer (None removes it); returns the previous one."""
    global _observer
    previous, _observer = _observer, observer
    return previous


def notify_attempt(service: str, error: ExternalAPIError | None, started: float) -> None:
    """One attempt ended (`error` None: it succeeded); `started` is its monotonic start."""
    _tell(lambda o: o.attempt(service, attempt_outcome(error), time.monotonic() - started))


def notify_failed(service: str, error: ExternalAPIError) -> None:
    """A call failed for good: retries spent, or the error is not worth retrying."""
    _tell(lambda o: o.failed(service, error.code))


def _tell(notice: Callable[[RequestObserver], None]) -> None:
    observer = _observer
    if observer is None:
        return
    try:
        notice(observer)
    except Exception:  # a metrics hook must never break a request
        logger.opt(exception=True).debug("request observer failed")
