"""HyperLogLog sketches of user sets, for unique users over many days (docs/reporting.md).

A sketch is ``M = 4096`` one-byte registers (precision ``P = 12``), stored as 4,096 bytes
(or sparse, below) per (project, event name, UTC day) in ``event_day_sketches``. A
user's id is hashed to 64 bits (BLAKE2b): the first 12 bits pick a register, which keeps
the largest "position of the first 1 bit" of the other 52 seen so far. The union of
several days is the register-wise maximum (done on Python integers, eight bits a lane, in
a few microseconds per day);
the count is estimated from the registers' histogram with Ertl's improved estimator
("New cardinality estimation algorithms for HyperLogLog sketches", 2017), which needs no
bias table and is close to unbiased from one user to billions.

Error: relative standard error 1.04/√4096 ≈ 1.6% (about 95% of estimates within ±3.3%,
99.7% within ±4.9%); small sets are nearly exact (hash collisions among a few hundred
users in 4,096 registers are rare, and the estimator accounts for them).

Small sets are stored **sparse** (as HyperLogLog++ does): the non-zero registers only, as
long as that is shorter than the 4,096 dense bytes (at most 1,365 of them): their indexes
(unsigned 16-bit little-endian, ascending), then their values (one byte each), 3 bytes a
register. A key with a few dozen users a day then costs a few hundred bytes to read and
rewrite instead of 4 KiB, which is what a batch of events spread over many days (a
back-fill) does for nearly every event. The form depends
only on the set (how many registers are non-zero), so a sketch built at once equals one
built user by user; every function here takes either form, and ``merge`` returns the
dense one.

Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable

__all__ = ["EMPTY", "M", "P", "add", "estimate", "merge", "registers_of", "union"]

P = 12
M = 1 << P
_Q = 64 - P  # bits left after the register index
_LOW = (1 << _Q) - 1
EMPTY = b""  # the sketch of no user (sparse)
_SPARSE_MAX = (M - 1) // 3  # 1,365 registers: 4,095 bytes, under the dense form's 4,096
_HIGH = int.from_bytes(b"\x80" * M, "little")  # the top bit of every lane
_ALPHA = 1 / (2 * math.log(2))


def registers_of(users: Iterable[str]) -> bytes:
    """The sketch of a set of users."""
    return add(EMPTY, users)


def _sparse(sketch: bytes) -> tuple[array[int], bytearray]:
    """A sparse sketch's indexes (ascending) and their values."""
    k = len(sketch) // 3
    indexes = array("H")
    indexes.frombytes(sketch[: 2 * k])
    if sys.byteorder != "little":
        indexes.byteswap()
    return indexes, bytearray(sketch[2 * k :])


def _raise(dense: bytearray, indexes: array[int], values: bytearray) -> bytearray:
    """``dense`` with each of the sparse registers raised to at least its value."""
    for index, value in zip(indexes, values, strict=True):
        if value > dense[index]:
            dense[index] = value
    return dense


def _encode(indexes: array[int], values: bytearray) -> bytes:
    """Registers given sparse, in the form their number calls for."""
    if len(indexes) > _SPARSE_MAX:
        return bytes(_raise(bytearray(M), indexes, values))
    if sys.byteorder != "little":
        indexes = array("H", indexes)
        indexes.byteswap()
    return indexes.tobytes() + bytes(values)


def _dense(sketch: bytes) -> bytes:
    """The dense form of either form."""
    if len(sketch) == M:
        return sketch
    return bytes(_raise(bytearray(M), *_sparse(sketch)))


def _add_sparse(sketch: bytes, users: Iterable[str]) -> bytes:
    indexes, values = _sparse(sketch)
    changed = False
    blake2b = hashlib.blake2b
    for user in users:
        h = int.from_bytes(blake2b(user.encode(), digest_size=8).digest(), "little")
        index = h >> _Q
        value = _Q - (h & _LOW).bit_length() + 1
        at = bisect_left(indexes, index)
        if at < len(indexes) and indexes[at] == index:
            if value > values[at]:
                values[at] = value
                changed = True
        else:
            indexes.insert(at, index)
            values.insert(at, value)
            changed = True
    return _encode(indexes, values) if changed else sketch


def add(sketch: bytes, users: Iterable[str]) -> bytes:
    """``sketch`` with ``users`` added (the same bytes object if no register moved)."""
    if len(sketch) != M:
        return _add_sparse(sketch, users)
    changed: bytearray | None = None
    blake2b = hashlib.blake2b
    for user in users:
        # The register (first P bits of the hash) and its value (position of the first
        # 1 bit of the other Q, 1..Q+1), inline: this runs for every new user-day.
        h = int.from_bytes(blake2b(user.encode(), digest_size=8).digest(), "little")
        index = h >> _Q
        value = _Q - (h & _LOW).bit_length() + 1
        current = sketch[index] if changed is None else changed[index]
        if value > current:
            if changed is None:
                changed = bytearray(sketch)
            changed[index] = value
    return sketch if changed is None else bytes(changed)


def _max(a: int, b: int) -> int:
    """Lane-wise maximum of two register arrays as little-endian integers (lanes < 128):
    ``(a | HIGH) - b`` keeps a lane's top bit exactly where ``a >= b``, without borrows
    across lanes."""
    keep_a = ((((a | _HIGH) - b) & _HIGH) >> 7) * 0xFF
    return b ^ ((a ^ b) & keep_a)


def merge(sketches: Iterable[bytes]) -> bytes:
    """The sketch of the union of the sketches' sets (dense)."""
    total = 0
    sparse = bytearray(M)
    for sketch in sketches:
        if len(sketch) == M:
            total = _max(total, int.from_bytes(sketch, "little"))
        else:
            _raise(sparse, *_sparse(sketch))
    return _max(total, int.from_bytes(sparse, "little")).to_bytes(M, "little")


def union(sketches: Iterable[bytes]) -> int:
    """Estimated number of distinct users over the sketches."""
    return estimate(merge(sketches))


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        before = z
        z += x * y
        y += y
        if z == before:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        before = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == before:
            return z / 3


def estimate(sketch: bytes) -> int:
    """Ertl's improved estimator over the registers' histogram."""
    sketch = _dense(sketch)
    counts = [sketch.count(value) for value in range(_Q + 2)]
    if counts[0] == M:
        return 0
    z = M * _tau(1.0 - counts[_Q + 1] / M)
    for k in range(_Q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += M * _sigma(counts[0] / M)
    return round(_ALPHA * M * M / z)
