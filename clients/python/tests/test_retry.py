import datetime as dt

import pytest

from tidings_client import (
    APIError,
    AuthenticationError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TidingsConnectionError,
    TidingsTimeoutError,
    ValidationError,
)
from tidings_client._retry import is_retryable, parse_retry_after, retry_after_of


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0)
    top = [policy.delay(n, rand=lambda: 0.999999) for n in range(6)]
    assert top == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], rel=1e-3)
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(3, rand=lambda: 0.5) == pytest.approx(2.0)


def test_huge_retry_counts_do_not_overflow():
    assert RetryPolicy(max_backoff=30).delay(10_000, rand=lambda: 0.5) == 15.0


def test_retry_after_is_a_floor_capped_by_max_retry_after():
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0, max_retry_after=60)
    assert policy.delay(0, retry_after=7, rand=lambda: 0.5) == 7
    assert policy.delay(5, retry_after=1, rand=lambda: 0.9) == pytest.approx(3.6)
    assert policy.delay(0, retry_after=3600, rand=lambda: 0.0) == 60


def err(status, cls=APIError, **kw):
    return cls("x", status=status, **kw)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (err(408), True),
        (err(429, RateLimitedError), True),
        (err(500, ServerError), True),
        (err(503, ServerError), True),
        (TidingsConnectionError("refused"), True),
        (TidingsTimeoutError("slow"), True),
        (err(400, ValidationError), False),
        (err(401, AuthenticationError), False),
        (err(404), False),
        (err(409), False),
        (err(413), False),
        (err(422, ValidationError), False),
    ],
)
def test_which_failures_are_retried(error, retryable):
    assert is_retryable(error) is retryable


def test_should_retry_counts_retries():
    policy = RetryPolicy(max_retries=2)
    error = err(503, ServerError)
    assert [policy.should_retry(n, error) for n in range(4)] == [True, True, False, False]
    assert RetryPolicy(max_retries=None).should_retry(10**6, error)
    assert not RetryPolicy(max_retries=0).should_retry(0, error)


def test_retry_after_parsing():
    assert parse_retry_after({"Retry-After": "12"}) == 12
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After": "-3"}) == 0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    now = dt.datetime(2026, 4, 30, 8, 0, 0, tzinfo=dt.UTC)
    http_date = "Thu, 30 Apr 2026 08:00:30 GMT"
    assert parse_retry_after({"Retry-After": http_date}, now=lambda: now) == 30


def test_retry_after_of_reads_503_headers_too():
    assert retry_after_of(err(503, ServerError, headers={"Retry-After": "4"})) == 4
    assert retry_after_of(RateLimitedError("x", status=429, retry_after=2.0)) == 2.0
    assert retry_after_of(TidingsConnectionError("x")) is None


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(backoff=-1)
