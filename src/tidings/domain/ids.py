"""Identifiers: prefixed, time-sortable ULIDs for rows and requests.

A ULID is 48 bits of milliseconds and 80 random bits in Crockford base32. We encode it
ten bits at a time through a lookup table: ULID libraries (and ``base64.b32encode``) cost
a measurable share of a single-event ingest request.
"""

from __future__ import annotations

import random
import time
from typing import NewType

__all__ = [
    "EventId",
    "ProfileId",
    "ProjectId",
    "new_device_id",
    "new_event_id",
    "new_profile_id",
    "new_request_id",
    "new_ulid",
]

ProjectId = NewType("ProjectId", int)
ProfileId = NewType("ProfileId", str)
EventId = NewType("EventId", str)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit value → 2 characters


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID; ``now_ms`` defaults to the current time."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    # Ids are not secrets: a fast PRNG is enough, and os.urandom costs a system call.
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | random.getrandbits(80)
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 0x3FF] for shift in range(120, -1, -10)])


def new_request_id() -> str:
    return f"req_{new_ulid()}"


def new_event_id() -> EventId:
    return EventId(f"evt_{new_ulid()}")


def new_profile_id() -> ProfileId:
    return ProfileId(f"prf_{new_ulid()}")


def new_device_id() -> str:
    return f"dev_{new_ulid()}"
