"""The one backoff: capped doubling, bounded jitter, Retry-After precedence, per-loop state."""

from __future__ import annotations

import random

import pytest

from shared.backoff import Backoff


class TestDelay:
    def test_doubles_from_the_first_wait_up_to_the_cap(self) -> None:
        policy = Backoff(first_s=0.1, cap_s=1.0)
        assert [policy.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])

    def test_the_cap_bounds_even_the_first_wait(self) -> None:
        assert Backoff(first_s=2.0, cap_s=0.5).delay(0) == 0.5

    def test_a_huge_retry_index_stays_at_the_cap(self) -> None:
        policy = Backoff(first_s=0.5, cap_s=30.0)
        assert policy.delay(10_000) == 30.0

    def test_jitter_scales_each_wait_within_its_bounds(self) -> None:
        random.seed(7)
        policy = Backoff(first_s=1.0, cap_s=8.0, jitter=0.5)
        for n, full in enumerate([1.0, 2.0, 4.0, 8.0, 8.0]):
            waits = [policy.delay(n) for _ in range(200)]
            assert all(full * 0.5 <= wait <= full for wait in waits)
            assert len(set(waits)) > 100  # actually random, so clients do not retry in step
            assert min(waits) < full * 0.6 and max(waits) > full * 0.9  # spans the range

    def test_no_jitter_is_exact(self) -> None:
        policy = Backoff(first_s=0.25, cap_s=4.0)
        assert {policy.delay(2) for _ in range(50)} == {1.0}

    def test_full_jitter_may_wait_nothing_but_never_more_than_the_cap(self) -> None:
        policy = Backoff(first_s=1.0, cap_s=2.0, jitter=1.0)
        assert all(0.0 <= policy.delay(5) <= 2.0 for _ in range(100))


class TestRetryAfter:
    policy = Backoff(first_s=0.1, cap_s=1.0, jitter=0.5, retry_after_max_s=30.0)

    def test_a_longer_retry_after_wins_even_past_the_cap(self) -> None:
        assert self.policy.delay(0, retry_after_s=7.0) == 7.0

    def test_retry_after_is_capped(self) -> None:
        assert self.policy.delay(0, retry_after_s=3600.0) == 30.0

    def test_a_shorter_retry_after_does_not_shorten_the_backoff(self) -> None:
        for _ in range(50):
            wait = self.policy.delay(4, retry_after_s=0.0)  # capped at 1.0, jittered
            assert 0.5 <= wait <= 1.0

    def test_none_means_no_header(self) -> None:
        assert Backoff(first_s=0.2, cap_s=1.0).delay(1, None) == pytest.approx(0.4)


class TestWaits:
    def test_next_walks_the_schedule_and_reset_starts_it_again(self) -> None:
        waits = Backoff(first_s=0.1, cap_s=0.5).waits()
        assert [waits.next() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
        assert waits.retries == 5
        waits.reset()
        assert waits.next() == pytest.approx(0.1)

    def test_each_loop_has_its_own_state(self) -> None:
        policy = Backoff(first_s=1.0, cap_s=10.0)
        first, second = policy.waits(), policy.waits()
        first.next()
        first.next()
        assert (first.next(), second.next()) == (4.0, 1.0)

    def test_a_loop_that_runs_for_ever_stays_at_the_cap(self) -> None:
        waits = Backoff(first_s=0.5, cap_s=15.0).waits()
        for _ in range(5000):  # hours of outage: the exponent must not overflow
            wait = waits.next()
        assert wait == 15.0

    def test_next_passes_retry_after_through(self) -> None:
        waits = Backoff(first_s=0.1, cap_s=1.0, retry_after_max_s=5.0).waits()
        assert waits.next(retry_after_s=9.0) == 5.0
        assert waits.next() == pytest.approx(0.2)  # the header did not skip a step


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"first_s": 0.0, "cap_s": 1.0},
            {"first_s": 1.0, "cap_s": -1.0},
            {"first_s": 1.0, "cap_s": 1.0, "jitter": 1.5},
            {"first_s": 1.0, "cap_s": 1.0, "jitter": -0.1},
            {"first_s": 1.0, "cap_s": 1.0, "retry_after_max_s": -1.0},
        ],
    )
    def test_nonsense_is_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            Backoff(**kwargs)

    def test_a_negative_retry_is_refused(self) -> None:
        with pytest.raises(ValueError):
            Backoff(first_s=1.0, cap_s=1.0).delay(-1)
