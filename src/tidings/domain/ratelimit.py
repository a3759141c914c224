"""A token-bucket rate limiter with bounded memory; pure (the caller passes the time).

Each key has a bucket of ``capacity`` tokens that refills at ``rate`` tokens per second;
a request takes one token or is refused with the seconds until one is available. Buckets
live in an LRU map of at most ``max_keys`` entries. A bucket that has refilled completely
is indistinguishable from a new one, so idle full buckets are dropped as they reach the
old end of the map; when the map is full anyway the least recently used bucket goes
(its key then starts over with a full bucket).

Not thread-safe: the HTTP edge calls it from the event loop only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["TokenBucketLimiter"]

# Idle buckets examined per call, so that a call costs O(1) however many keys are stale.
_SWEEP = 2


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBucketLimiter:
    """``take(key, now)`` → ``(allowed, retry_after_seconds)``; ``now`` in seconds, monotonic."""

    def __init__(self, rate: float, capacity: float, *, max_keys: int = 65_536) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.capacity = capacity
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float) -> tuple[bool, float]:
        """Take one token for ``key``. Refused: ``(False, seconds until one is available)``."""
        self._sweep(now)  # first: a full bucket swept here is the same as a new one
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True, 0.0
        return False, (1 - bucket.tokens) / self.rate

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.updated)  # a clock going backwards adds nothing
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
        bucket.updated = max(bucket.updated, now)

    def _is_full(self, bucket: _Bucket, now: float) -> bool:
        return bucket.tokens + max(0.0, now - bucket.updated) * self.rate >= self.capacity

    def _sweep(self, now: float) -> None:
        """Drop up to ``_SWEEP`` least recently used buckets that have refilled completely."""
        for _ in range(_SWEEP):
            if not self._buckets:
                return
            oldest = next(iter(self._buckets.values()))
            if not self._is_full(oldest, now):
                return
            self._buckets.popitem(last=False)
