"""Values that travel through the ingest log, and how they are partitioned."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "RESUMABLE",
    "AppendOutcome",
    "AppendRequest",
    "IdempotencyRecord",
    "LogEntry",
    "LogRecord",
    "derived_message_id",
    "partition_of",
]

EntryKind = Literal["event", "identify", "alias", "user", "device", "erase"]


def partition_of(project_id: int, identity_key: str, partitions: int) -> int:
    """Stable partition of one identity: every entry of that identity keeps its order."""
    return zlib.crc32(f"{project_id}\x1f{identity_key}".encode()) % partitions


def derived_message_id(idempotency_key: str, request_hash: str, index: int) -> str:
    """The message id of an item sent without one under an ``Idempotency-Key``.

    It depends on the request too: a late retry of the same request (after its key
    expired) has no second effect, while a new request reusing an expired key is new.
    """
    digest = hashlib.sha256(f"{idempotency_key}\x1f{request_hash}".encode()).hexdigest()[:40]
    return f"idem_{digest}_{index}"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a tenth of a batch request
class LogEntry:
    """One accepted item, ready to append: ``payload`` is the validated, normalised item."""

    project_id: int
    kind: EntryKind
    partition: int
    payload: dict[str, Any]
    accepted_at: int


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry as read back from the log, with its position."""

    seq: int
    partition: int
    project_id: int
    kind: EntryKind
    payload: dict[str, Any]
    accepted_at: int


# The status of a record whose entries are in the log but whose answer is not stored,
# because the request that appended them stopped waiting for it: any retry may compute
# the answer. A record without a status belongs to a request that may still be running.
RESUMABLE = 202


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    project_id: int
    key: str
    request_hash: str
    created_at: int
    status: int | None = None
    body: bytes | None = None


@dataclass(slots=True)
class AppendRequest:
    """The entries of one API request, appended atomically with its idempotency record."""

    entries: list[LogEntry]
    idempotency: IdempotencyRecord | None = None
    want_positions: bool = False
    # The idempotency record is stored already, without an answer: a retry finishing a
    # request that claimed the key and died (or lost its log) before answering. Append
    # again without claiming (entries derived from the key are dropped as duplicates),
    # then store the record's answer.
    resume: bool = False


@dataclass(slots=True)
class AppendOutcome:
    """``appended`` is False when another request already holds the idempotency key."""

    appended: bool
    positions: list[tuple[int, int]] = field(default_factory=list)  # (partition, seq)
