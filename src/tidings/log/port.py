"""The ingest log interface every adapter implements."""

from __future__ import annotations

from typing import Any, Protocol

from tidings.domain.ingest import AppendOutcome, AppendRequest, LogRecord

__all__ = ["IngestLog"]


class IngestLog(Protocol):
    partitions: int

    def append(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        """Durably append every request's entries in one commit; outcome per request."""
        ...

    def read(self, partition: int, after: int, limit: int) -> list[LogRecord]:
        """Entries of ``partition`` with a position above ``after``, oldest first."""
        ...

    def read_all(self, after: int, limit: int) -> list[LogRecord]:
        """Entries of every partition above ``after``, oldest first."""
        ...

    def trim_through(self, conn: Any, upto: int) -> None:
        """Forget every entry at or below ``upto`` inside the caller's transaction."""
        ...

    def trim(self, partition: int, upto: int) -> int:
        """Forget processed entries at or below ``upto``; returns how many went."""
        ...

    def heads(self) -> dict[int, int]:
        """The newest position of each partition that has entries."""
        ...

    def last_seq(self) -> int:
        """The highest position ever appended (0 for an empty log); cheap to call often."""
        ...

    def pending(self) -> int:
        """Entries appended but not yet processed (the consumer lag), across partitions."""
        ...
