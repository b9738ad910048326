"""The retry policy's waits and the server's `Retry-After`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline.clients.retry import RetryPolicy, parse_retry_after
from shared.backoff import Backoff


class TestRetryPolicy:
    def test_backoff_grows_exponentially_with_jitter_and_is_capped(self) -> None:
        policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0)
        for index, full in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
            delays = [policy.backoff(index) for _ in range(50)]
            assert all(full * 0.5 <= d <= full for d in delays)
            assert len({round(d, 6) for d in delays}) > 1  # jittered

    def test_retry_after_wins_when_longer_but_is_capped(self) -> None:
        policy = RetryPolicy(backoff_base_s=0.1, backoff_max_s=1.0, retry_after_max_s=30.0)
        assert policy.backoff(0, retry_after_s=7.0) == 7.0
        assert policy.backoff(0, retry_after_s=3600.0) == 30.0
        assert policy.backoff(0, retry_after_s=0.0) <= 0.1

    def test_waits_follow_the_shared_backoff(self) -> None:
        policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=8.0, retry_after_max_s=30.0)
        shared = Backoff(first_s=0.5, cap_s=8.0, jitter=0.5, retry_after_max_s=30.0)
        random.seed(3)
        ours = [policy.backoff(n, retry_after_s=None) for n in range(6)]
        random.seed(3)
        assert ours == [shared.delay(n) for n in range(6)]

    def test_nonsense_waits_are_refused_at_construction(self) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(backoff_base_s=0.0)


class TestRetryAfter:
    def test_retry_after_seconds_and_http_date(self) -> None:
        now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        assert parse_retry_after("12") == 12.0
        assert parse_retry_after(" 1.5 ") == 1.5
        date = format_datetime(now + timedelta(seconds=20), usegmt=True)
        assert parse_retry_after(date, now=now) == pytest.approx(20.0)
        assert parse_retry_after(format_datetime(now - timedelta(hours=1)), now=now) == 0.0
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None
        assert parse_retry_after("nan") is None
