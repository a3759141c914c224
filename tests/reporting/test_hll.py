"""The HyperLogLog sketches behind unique users over many days (store/hll.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.store import hll


def test_small_sets_are_counted_nearly_exactly() -> None:
    for n in (0, 1, 2, 10):
        assert hll.estimate(hll.registers_of(f"prf_{i}" for i in range(n))) == n
    for n in (100, 500):
        assert abs(hll.estimate(hll.registers_of(f"prf_{i}" for i in range(n))) - n) <= 0.04 * n


def test_large_sets_are_within_the_documented_error() -> None:
    # 1.6% standard error: every estimate here within 3 standard errors (4.9%).
    for n in (1_000, 5_000, 12_000, 30_000, 100_000):
        estimate = hll.estimate(hll.registers_of(f"prf_{i}" for i in range(n)))
        assert abs(estimate - n) <= 0.049 * n, (n, estimate)


def test_the_union_of_days_is_the_sketch_of_all_their_users() -> None:
    rng = random.Random(7)
    days = [[f"prf_{rng.randrange(50_000)}" for _ in range(3_000)] for _ in range(30)]
    merged = hll.merge(hll.registers_of(day) for day in days)
    assert merged == hll.registers_of(user for day in days for user in day)
    everyone = len({user for day in days for user in day})
    assert abs(hll.union(hll.registers_of(day) for day in days) - everyone) <= 0.049 * everyone


@settings(deadline=None, max_examples=30)
@given(
    st.lists(
        st.binary(min_size=hll.M, max_size=hll.M).map(lambda b: bytes(x % 54 for x in b)),
        max_size=6,
    )
)
def test_merge_is_the_registerwise_maximum(sketches: list[bytes]) -> None:
    expected = bytes(max(column, default=0) for column in zip(*sketches, strict=True))
    assert hll.merge(sketches) == (expected if sketches else bytes(hll.M))


def test_adding_known_users_returns_the_same_sketch() -> None:
    sketch = hll.registers_of(["a", "b", "c"])
    assert hll.add(sketch, ["a", "c"]) is sketch
    assert hll.add(sketch, ["d"]) == hll.registers_of(["a", "b", "c", "d"])


def test_small_sets_are_stored_sparse_and_the_form_depends_only_on_the_set() -> None:
    """Up to 1,365 non-zero registers a sketch is 3 bytes per register, past that the
    4,096 dense bytes; built at once or user by user, in any order, the bytes are equal,
    and each form counts and merges the same."""
    rng = random.Random(12)
    for n in (1, 40, 1_500, 1_700, 2_500, 20_000):
        users = [f"prf_{rng.randrange(10**9)}" for _ in range(n)]
        at_once = hll.registers_of(users)
        nonzero = sum(1 for v in hll.merge([at_once]) if v)
        assert len(at_once) == (3 * nonzero if nonzero <= 1_365 else hll.M), n
        sketch = hll.EMPTY
        shuffled = users[:]
        rng.shuffle(shuffled)
        for start in range(0, n, 97):  # batches, as the rollup hook adds them
            sketch = hll.add(sketch, shuffled[start : start + 97])
        assert sketch == at_once, n
        assert hll.estimate(at_once) == hll.estimate(hll.merge([at_once]))
    small = hll.registers_of(["a", "b"])
    assert len(small) == 6
    assert hll.add(small, ["a"]) is small
    dense = hll.registers_of(f"u{i}" for i in range(5_000))
    assert hll.merge([small, dense]) == hll.merge([hll.merge([small]), dense])
    assert hll.union([small, hll.registers_of(["c"])]) == 3
