"""Identifiers: prefixed, time-sortable ULIDs for rows and requests."""

from __future__ import annotations

from typing import NewType

from ulid import ULID

__all__ = ["EventId", "ProfileId", "ProjectId", "new_event_id", "new_profile_id", "new_request_id"]

ProjectId = NewType("ProjectId", int)
ProfileId = NewType("ProfileId", str)
EventId = NewType("EventId", str)


def new_request_id() -> str:
    return f"req_{ULID()}"


def new_event_id() -> EventId:
    return EventId(f"evt_{ULID()}")


def new_profile_id() -> ProfileId:
    return ProfileId(f"prf_{ULID()}")
