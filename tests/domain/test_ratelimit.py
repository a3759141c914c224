"""The token bucket: bursts, refill, the wait it reports, and bounded memory."""

from __future__ import annotations

import pytest

from tidings.domain.ratelimit import TokenBucketLimiter


def test_a_burst_of_capacity_is_allowed_then_refused() -> None:
    limiter = TokenBucketLimiter(rate=2, capacity=5)
    assert [limiter.take("k", 100.0)[0] for _ in range(5)] == [True] * 5
    assert limiter.take("k", 100.0) == (False, 0.5)


def test_tokens_refill_at_the_rate_up_to_capacity() -> None:
    limiter = TokenBucketLimiter(rate=2, capacity=3)
    for _ in range(3):
        limiter.take("k", 0.0)
    assert limiter.take("k", 0.0)[0] is False
    assert limiter.take("k", 0.5)[0] is True  # one token after 1 / rate seconds
    assert limiter.take("k", 0.5)[0] is False
    # A long pause refills to capacity, not beyond.
    assert [limiter.take("k", 1000.0)[0] for _ in range(4)] == [True, True, True, False]


def test_retry_after_is_the_time_until_the_next_token() -> None:
    limiter = TokenBucketLimiter(rate=0.25, capacity=1)
    assert limiter.take("k", 10.0) == (True, 0.0)
    allowed, wait = limiter.take("k", 11.0)  # 0.25 tokens back after 1 s
    assert not allowed
    assert wait == pytest.approx(3.0)
    assert limiter.take("k", 11.0 + wait)[0] is True


def test_keys_have_separate_buckets() -> None:
    limiter = TokenBucketLimiter(rate=1, capacity=1)
    assert limiter.take("a", 0.0)[0] is True
    assert limiter.take("a", 0.0)[0] is False
    assert limiter.take("b", 0.0)[0] is True


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    limiter = TokenBucketLimiter(rate=1, capacity=1)
    limiter.take("k", 50.0)
    assert limiter.take("k", 10.0)[0] is False
    assert limiter.take("k", 50.5)[0] is False
    assert limiter.take("k", 51.0)[0] is True


def test_memory_is_bounded_by_evicting_the_least_recently_used() -> None:
    limiter = TokenBucketLimiter(rate=1, capacity=1, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.take(key, 0.0)
    limiter.take("a", 0.0)  # refused, but "a" is now the most recently used
    limiter.take("d", 0.0)  # evicts "b"
    assert len(limiter) == 3
    assert limiter.take("a", 0.0)[0] is False  # "a" kept its empty bucket
    assert limiter.take("b", 0.0)[0] is True  # "b" starts over


def test_idle_buckets_that_refilled_are_dropped() -> None:
    limiter = TokenBucketLimiter(rate=1, capacity=2)
    for i in range(10):
        limiter.take(f"k{i}", 0.0)
    assert len(limiter) == 10
    for step in range(10):  # later traffic from one key sweeps the full buckets away
        limiter.take("active", 5.0 + step)
    assert len(limiter) == 1


def test_sweeping_never_gives_an_active_key_extra_tokens() -> None:
    limiter = TokenBucketLimiter(rate=1, capacity=2)
    assert limiter.take("k", 0.0)[0] is True
    assert [limiter.take("k", 10.0)[0] for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("rate", "capacity", "max_keys"), [(0, 1, 1), (-1, 1, 1), (1, 0.5, 1), (1, 1, 0)]
)
def test_invalid_parameters_are_refused(rate: float, capacity: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate=rate, capacity=capacity, max_keys=max_keys)
