"""The process's request observer: registered once, told of attempts and failures, and
never able to break a request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipeline.clients.errors import AuthError
from pipeline.clients.observer import notify_attempt, notify_failed, set_request_observer


class Recorder:
    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.heard: list[tuple[str, ...]] = []

    def attempt(self, service: str, outcome: str, seconds: float) -> None:
        if self.broken:
            raise RuntimeError("metrics down")
        assert 0 <= seconds < 5
        self.heard.append(("attempt", service, outcome))

    def failed(self, service: str, error: str) -> None:
        if self.broken:
            raise RuntimeError("metrics down")
        self.heard.append(("failed", service, error))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    previous = set_request_observer(recorder)
    try:
        yield recorder
    finally:
        set_request_observer(previous)


def test_attempts_and_failures_reach_the_observer(recorder: Recorder) -> None:
    error = AuthError("datura", 401, "bad key", retryable=False)
    notify_attempt("datura", None, time.monotonic())
    notify_attempt("datura", error, time.monotonic())
    notify_failed("datura", error)
    assert recorder.heard == [
        ("attempt", "datura", "ok"),
        ("attempt", "datura", "http_4xx"),
        ("failed", "datura", "external_auth_error"),
    ]


def test_a_failing_observer_is_ignored(recorder: Recorder) -> None:
    recorder.broken = True
    notify_attempt("chutes", None, time.monotonic())
    notify_failed("chutes", AuthError("chutes", 403, "no", retryable=False))
    assert recorder.heard == []


def test_set_returns_the_previous_observer(recorder: Recorder) -> None:
    other = Recorder()
    assert set_request_observer(other) is recorder
    assert set_request_observer(recorder) is other
